#!/usr/bin/env python3
"""The shared Wi-Fi link case of the benchmarks (`make bench`, `make bench-link`).

A public night as the server sees it: the server in a network namespace
whose only way out is a veth shaped to LINK_MBIT (HTB; `netem` is not
needed), VIEWERS browser-like clients on the other side (imageclients.py:
a WebSocket and a keep-alive HTTP connection each, each from an address of
its own), a new IMAGE_SIZE image at a time. For each server and way of
making the image live: the time from the command to each viewer holding
the whole body, first / median / last viewer, medians over IMAGES images.
A second run caps one viewer's address at FAR_MBIT (a phone far from the
access point). The two ideals come from the link rate: every phone at once
(fair share: all at n x T) and one phone after another (k x T), T the time
one image takes over the whole link.

Needs root (namespaces, tc); without it the case says so and is skipped.
Prints a Markdown table; `run.py` adds it to build/bench.md.
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run  # noqa: E402  (Child, viewer_folder, log)

LINK_MBIT = 25
FAR_MBIT = 2
VIEWERS = 10
IMAGES = 5          # the first after a start pays the one probe (docs/design.md); 5 keep one more from moving the median
IMAGE_SIZE = 3 * 1024 * 1024
NAMESPACE = "alsserve-link"
SERVER_ADDRESS = "10.77.0.1"
CLIENT_ADDRESSES = ["10.77.0.%d" % (10 + i) for i in range(VIEWERS)]
FAR_ADDRESS = CLIENT_ADDRESSES[-1]
CASES = (("alsserve", "publish", "viewer", "alsserve, publish_image()"),
         ("alsserve", "write_notify", "als", "alsserve, file + notify"),
         ("aiohttp", "write_notify", "als", "aiohttp as ALS 0.7 runs it"))


def sh(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def available():
    """None when the case can run here, else why not."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and tc)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return "needs %s (iproute2)" % tool
    return None


class Link:
    """The namespace, the veth pair and the shaping of the server's side."""

    def __init__(self, far):
        self.remove()
        sh("ip", "netns", "add", NAMESPACE)
        sh("ip", "link", "add", "alsl-viewers", "type", "veth", "peer", "name", "alsl-server")
        sh("ip", "link", "set", "alsl-server", "netns", NAMESPACE)
        inside = ("ip", "netns", "exec", NAMESPACE)
        sh(*inside, "ip", "addr", "add", SERVER_ADDRESS + "/24", "dev", "alsl-server")
        sh(*inside, "ip", "link", "set", "alsl-server", "up")
        sh(*inside, "ip", "link", "set", "lo", "up")
        for address in CLIENT_ADDRESSES:
            sh("ip", "addr", "add", address + "/24", "dev", "alsl-viewers")
        sh("ip", "link", "set", "alsl-viewers", "up")
        # What leaves the server: LINK_MBIT in all; one viewer at FAR_MBIT in the far run.
        tc = inside + ("tc",)
        sh(*tc, "qdisc", "add", "dev", "alsl-server", "root", "handle", "1:", "htb", "default", "10")
        sh(*tc, "class", "add", "dev", "alsl-server", "parent", "1:", "classid", "1:1", "htb",
           "rate", "%dmbit" % LINK_MBIT, "ceil", "%dmbit" % LINK_MBIT)
        sh(*tc, "class", "add", "dev", "alsl-server", "parent", "1:1", "classid", "1:10", "htb",
           "rate", "%dmbit" % (LINK_MBIT - FAR_MBIT), "ceil", "%dmbit" % LINK_MBIT)
        if far:
            sh(*tc, "class", "add", "dev", "alsl-server", "parent", "1:1", "classid", "1:20", "htb",
               "rate", "%dmbit" % FAR_MBIT, "ceil", "%dmbit" % FAR_MBIT)
            sh(*tc, "filter", "add", "dev", "alsl-server", "protocol", "ip", "parent", "1:", "prio", "1",
               "u32", "match", "ip", "dst", FAR_ADDRESS + "/32", "flowid", "1:20")
        self.inside = list(inside)

    @staticmethod
    def remove():
        subprocess.run(["ip", "netns", "del", NAMESPACE], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "link", "del", "alsl-viewers"], stderr=subprocess.DEVNULL)


def one_case(link, kind, mode, style, workdir, errdir):
    """Per image: the seconds from the command to each viewer's whole body, by address."""
    folder = run.viewer_folder(tempfile.mkdtemp(dir=workdir), "link-%s-%s" % (kind, mode))
    port = 8431
    server = run.Child(link.inside + [run.PY, os.path.join(HERE, "control.py"), kind, str(port), folder, "0.0.0.0"],
                       "link-" + kind, errdir)
    viewers = run.start_viewers(errdir, "link-viewers")
    images = []
    try:
        server.read(60)
        viewers.call({"cmd": "connect", "port": port, "n": VIEWERS, "style": style,
                      "host": SERVER_ADDRESS, "sources": CLIENT_ADDRESSES}, 60)
        for _ in range(IMAGES):
            seed = run.SEEDS.next()
            viewers.call({"cmd": "arm", "size": IMAGE_SIZE, "seed": seed, "style": style})
            sent = server.call({"cmd": "image", "mode": mode, "size": IMAGE_SIZE, "seed": seed}, 60)
            got = viewers.call({"cmd": "wait", "timeout": 120}, 200)
            if got["bad"] or got["done"] != VIEWERS:
                raise RuntimeError("%s %s: %d of %d viewers got the image, %d bad"
                                   % (kind, mode, got["done"], VIEWERS, got["bad"]))
            images.append({source: done - sent["t0"] for source, done in got["times"]})
            run.log("link %s %s: %s" % (kind, mode, " ".join("%.1f" % t for t in sorted(images[-1].values()))))
    finally:
        viewers.close()
        server.close()
    return images


def summary(images, near):
    """first / median / last viewer among the addresses near, medians over the images."""
    def pick(function):
        return statistics.median(function(sorted(t for a, t in image.items() if a in near)) for image in images)
    return pick(lambda times: times[0]), pick(statistics.median), pick(lambda times: times[-1])


def ideals(count, mbit):
    one = IMAGE_SIZE * 8 / (mbit * 1e6)
    return one, [one * k for k in range(1, count + 1)]


def measure(workdir, errdir):
    """{"plain": {case label: images}, "far": {...}}"""
    results = {}
    for run_name, far in (("plain", False), ("far", True)):
        link = Link(far)
        try:
            results[run_name] = {label: one_case(link, kind, mode, style, workdir, errdir)
                                 for kind, mode, style, label in CASES}
        finally:
            Link.remove()
    return results


def table(results):
    one, sequential = ideals(VIEWERS, LINK_MBIT)
    lines = ["| Link case (%d Mbit/s, %d viewers, %d MB images) | first | median | last | target |" %
             (LINK_MBIT, VIEWERS, IMAGE_SIZE >> 20), "|---|---|---|---|---|"]
    fair = VIEWERS * one
    lines.append("| computed: fair share (every phone at once) | %.1f s | %.1f s | %.1f s | |" % (fair, fair, fair))
    lines.append("| computed: one phone at a time | %.1f s | %.1f s | %.1f s | |" % (
        sequential[0], statistics.median(sequential), sequential[-1]))
    verdicts = []
    for label, images in results["plain"].items():
        first, median, last = summary(images, set(CLIENT_ADDRESSES))
        target = ""
        if label.startswith("alsserve"):
            ok = (median <= 1.2 * statistics.median(sequential), first <= 1.5, last <= 1.1 * fair)
            target = "median <= 1.2x one-at-a-time: %s; first <= 1.5 s: %s; last <= 1.1x fair share: %s" % tuple(
                "met" if o else "**missed**" for o in ok)
            verdicts.extend(ok)
        lines.append("| %s | %.1f s | %.1f s | %.1f s | %s |" % (label, first, median, last, target))
    near = set(CLIENT_ADDRESSES) - {FAR_ADDRESS}
    near_one, near_sequential = ideals(len(near), LINK_MBIT - FAR_MBIT)
    far_alone = IMAGE_SIZE * 8 / (FAR_MBIT * 1e6)
    lines.append("| far run: one viewer capped at %d Mbit/s; computed: the near ones one at a time | %.1f s | "
                 "%.1f s | %.1f s | the far one alone: %.1f s |" % (FAR_MBIT, near_sequential[0],
                                                                  statistics.median(near_sequential),
                                                                  near_sequential[-1], far_alone))
    for label, images in results["far"].items():
        first, median, last = summary(images, near)
        far_time = statistics.median(image[FAR_ADDRESS] for image in images)
        target = ""
        if label.startswith("alsserve"):
            ok = (median <= 1.3 * statistics.median(near_sequential), far_time <= 1.5 * far_alone)
            target = "near median <= 1.3x their ideal: %s; far <= 1.5x its own link: %s" % tuple(
                "met" if o else "**missed**" for o in ok)
            verdicts.extend(ok)
        lines.append("| far run, %s: near viewers; the far one %.1f s | %.1f s | %.1f s | %.1f s | %s |"
                     % (label, far_time, first, median, last, target))
    return "\n".join(lines) + "\n", verdicts


def main():
    why = available()
    if why:
        print("link case skipped: %s" % why)
        return 0
    workdir = tempfile.mkdtemp(prefix="alsserve-link-")
    errdir = os.path.join(run.BUILD, "bench-errors")
    os.makedirs(errdir, exist_ok=True)
    try:
        text, verdicts = table(measure(workdir, errdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    with open(os.path.join(run.BUILD, "bench-link.md"), "w") as f:
        f.write(text)
    print(text)
    print("link case: %d targets met, %d missed; written to build/bench-link.md"
          % (sum(verdicts), len(verdicts) - sum(verdicts)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

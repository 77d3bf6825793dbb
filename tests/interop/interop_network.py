"""Interop check: the displayed address on real (namespaced) networks.

A Raspberry Pi at the telescope often runs its own Wi-Fi hotspot: one
interface with a private address and no default route. 'auto' must still
find that address, and a phone on the hotspot must reach the displayed URL.
With no network at all, the server must say access is limited.

Needs root and iproute2's `ip` (CI runs as root); without them the tests
FAIL rather than skip. Run from the repository root:
    python3 -m unittest tests/interop/interop_network.py -v
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOTSPOT_ADDRESS = "10.42.0.1"           # NetworkManager's hotspot default
PHONE_ADDRESS = "10.42.0.2"
PORT = 8000                             # the default: namespaces have their own ports
STALE_ADDRESS = "192.0.2.77"            # a hosts-file entry for an address we do not have

PROBE = """
import json, sys
sys.path.insert(0, %r)
import alsserve
print(json.dumps({"auto": alsserve.resolve_displayed_address("auto"),
                  "addresses": alsserve.list_ipv4_addresses()}))
""" % ROOT

# Starts a server, prints what it displays, serves until stdin closes.
SERVE = """
import json, sys, urllib.request
sys.path.insert(0, %r)
import alsserve
server = alsserve.ImageServer(sys.argv[1], port=%d, displayed_address="auto")
url = server.start()
with urllib.request.urlopen("http://127.0.0.1:%d/data.json", timeout=10) as reply:
    local = reply.read().decode()
print(json.dumps({"url": url, "access_limited": server.access_limited, "local": local}), flush=True)
sys.stdin.read()
server.stop(0)
""" % (ROOT, PORT, PORT)

PHONE = """
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "data.json", timeout=10) as reply:
    sys.stdout.write(reply.read().decode())
"""


class NamespaceCase(unittest.TestCase):
    def setUp(self):
        if os.geteuid() != 0:
            self.fail("network namespaces need root (CI runs these tests as root)")
        if shutil.which("ip") is None:
            self.fail("iproute2's `ip` is missing (apt-get install iproute2)")
        self.tag = "%d-%d" % (os.getpid(), id(self) % 1000)
        self.folder = tempfile.mkdtemp(prefix="alsserve-netns-")
        self.addCleanup(shutil.rmtree, self.folder, True)

    def ip(self, *args):
        proc = subprocess.run(["ip"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=20)
        if proc.returncode != 0:
            self.fail("ip %s failed: %s" % (" ".join(args), proc.stderr.decode(errors="replace")))
        return proc.stdout.decode()

    def namespace(self, role):
        name = "alsserve-%s-%s" % (role, self.tag)
        self.ip("netns", "add", name)
        self.addCleanup(subprocess.run, ["ip", "netns", "del", name],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20)
        self.ip("-n", name, "link", "set", "lo", "up")
        return name

    def veth(self, left_ns, left_name, left_cidr, right_ns, right_name, right_cidr):
        """A cable between two namespaces (both ends named as on real machines)."""
        a, b = "als%da" % (os.getpid() % 10 ** 7), "als%db" % (os.getpid() % 10 ** 7)
        self.ip("link", "add", a, "type", "veth", "peer", "name", b)
        self.addCleanup(subprocess.run, ["ip", "link", "del", a],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20)
        for end, ns, name, cidr in ((a, left_ns, left_name, left_cidr), (b, right_ns, right_name, right_cidr)):
            self.ip("link", "set", end, "netns", ns)
            self.ip("-n", ns, "link", "set", end, "name", name)
            if cidr:
                self.ip("-n", ns, "addr", "add", cidr, "dev", name)
            self.ip("-n", ns, "link", "set", name, "up")

    def stale_hosts_file(self, ns):
        """`ip netns exec` mounts /etc/netns/NS/hosts over /etc/hosts: make the host
        name resolve to an address the namespace does not have."""
        if not os.path.isdir("/etc/netns"):     # leave /etc as it was (cleanups run last first)
            self.addCleanup(lambda: os.path.isdir("/etc/netns") and not os.listdir("/etc/netns")
                            and os.rmdir("/etc/netns"))
        folder = os.path.join("/etc/netns", ns)
        os.makedirs(folder)
        self.addCleanup(shutil.rmtree, folder, True)
        with open(os.path.join(folder, "hosts"), "w") as f:
            f.write("127.0.0.1 localhost\n%s %s\n" % (STALE_ADDRESS, socket.gethostname()))

    def run_in(self, ns, code, *args):
        proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code] + list(args),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        if proc.returncode != 0:
            self.fail("in %s: exit %d: %s" % (ns, proc.returncode, proc.stderr.decode(errors="replace")))
        return proc.stdout.decode(), proc.stderr.decode(errors="replace")

    def serve_in(self, ns):
        """A server in the namespace: (process, what it printed at start, stderr file)."""
        errors = tempfile.TemporaryFile()
        self.addCleanup(errors.close)
        process = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SERVE, self.folder],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors)
        self.addCleanup(process.kill)
        self.addCleanup(process.stdout.close)
        line = process.stdout.readline()
        if not line:
            process.wait(30)
            errors.seek(0)
            self.fail("server in %s failed: %s" % (ns, errors.read().decode(errors="replace")))
        return process, json.loads(line.decode()), errors

    def finish(self, process, errors):
        process.stdin.close()
        self.assertEqual(process.wait(30), 0)
        errors.seek(0)
        return errors.read().decode(errors="replace")


class HotspotTest(NamespaceCase):
    def setUp(self):
        super().setUp()
        self.hotspot = self.namespace("hotspot")
        self.phone = self.namespace("phone")
        self.veth(self.hotspot, "wlan0", HOTSPOT_ADDRESS + "/24", self.phone, "wlan0", PHONE_ADDRESS + "/24")
        self.assertEqual(self.ip("-n", self.hotspot, "route", "show", "default").strip(), "",
                         "the hotspot must have no default route")

    def test_auto_finds_the_hotspot_address(self):
        found = json.loads(self.run_in(self.hotspot, PROBE)[0])
        self.assertEqual(found["auto"], HOTSPOT_ADDRESS)
        self.assertEqual(found["addresses"][0], HOTSPOT_ADDRESS)
        self.assertEqual(found["addresses"][-1], "127.0.0.1")
        self.assertEqual(len(found["addresses"]), len(set(found["addresses"])))

    def test_a_phone_on_the_hotspot_reaches_the_displayed_url(self):
        process, started, errors = self.serve_in(self.hotspot)
        self.assertEqual(started["url"], "http://%s:%d/" % (HOTSPOT_ADDRESS, PORT))
        self.assertFalse(started["access_limited"])
        body = self.run_in(self.phone, PHONE, started["url"])[0]
        self.assertEqual(body, '{"STACK_SIZE": 0, "EXPO": "0:00:00"}')
        self.assertNotIn("limited", self.finish(process, errors))

    def test_stale_host_name_address_is_ignored(self):
        self.stale_hosts_file(self.hotspot)
        found = json.loads(self.run_in(self.hotspot, PROBE)[0])
        self.assertNotIn(STALE_ADDRESS, found["addresses"])
        self.assertEqual(found["auto"], HOTSPOT_ADDRESS)


# ALS's check before START, with another program already on the port:
# is_port_in_use(get_host_ip(), port) must agree with the facade's 0.0.0.0 bind.
PORT_CHECK = """
import json, socket, sys
sys.path.insert(0, %r)
import alsserve
results = {}
for other in ("0.0.0.0", %r, "127.0.0.1"):
    holder = socket.socket()
    holder.bind((other, %d))
    holder.listen(1)
    try:
        alsserve.bind_listener(%d).close()
        binds = True
    except alsserve.PortInUseError:
        binds = False
    results[other] = {"host_ip": alsserve.get_host_ip(),
                      "in_use": alsserve.is_port_in_use(alsserve.get_host_ip(), %d), "binds": binds}
    holder.close()
results["free"] = alsserve.is_port_in_use(alsserve.get_host_ip(), %d)
print(json.dumps(results))
""" % (ROOT, HOTSPOT_ADDRESS, PORT, PORT, PORT, PORT)

# -b: listening on the hotspot address only.
BIND_ONE = """
import json, sys, urllib.request
sys.path.insert(0, %r)
import alsserve
server = alsserve.ImageServer(sys.argv[1], port=%d, bind=%r)
url = server.start()
try:
    urllib.request.urlopen("http://127.0.0.1:%d/data.json", timeout=5)
    loopback = "reached"
except OSError as error:
    loopback = "refused"
print(json.dumps({"url": url, "loopback": loopback}), flush=True)
sys.stdin.read()
server.stop(0)
""" % (ROOT, PORT, HOTSPOT_ADDRESS, PORT)


class PortCheckTest(NamespaceCase):
    """ALS's is_port_in_use(get_host_ip(), port) against another server on
    0.0.0.0, on the host address and on 127.0.0.1 of the same port."""

    def setUp(self):
        super().setUp()
        self.hotspot = self.namespace("ports")
        self.phone = self.namespace("portsphone")
        self.veth(self.hotspot, "wlan0", HOTSPOT_ADDRESS + "/24", self.phone, "wlan0", PHONE_ADDRESS + "/24")

    def test_the_check_agrees_with_the_bind(self):
        results = json.loads(self.run_in(self.hotspot, PORT_CHECK)[0])
        self.assertFalse(results.pop("free"))
        for other, result in results.items():
            with self.subTest(other_server_on=other):
                self.assertEqual(result["host_ip"], HOTSPOT_ADDRESS)
                self.assertFalse(result["binds"], "the facade's bind succeeded next to it")
                self.assertTrue(result["in_use"], "ALS's check said the port is free")

    def test_bind_to_the_hotspot_address_only(self):
        process = subprocess.Popen(["ip", "netns", "exec", self.hotspot, sys.executable, "-c", BIND_ONE,
                                    self.folder], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        self.addCleanup(process.kill)
        started = json.loads(process.stdout.readline().decode() or "{}")
        self.assertEqual(started, {"url": "http://%s:%d/" % (HOTSPOT_ADDRESS, PORT), "loopback": "refused"})
        body = self.run_in(self.phone, PHONE, started["url"])[0]
        self.assertEqual(body, '{"STACK_SIZE": 0, "EXPO": "0:00:00"}')
        process.stdin.close()
        self.assertEqual(process.wait(30), 0)
        process.stdout.close()
        process.stderr.close()


class LoopbackOnlyTest(NamespaceCase):
    def setUp(self):
        super().setUp()
        self.isolated = self.namespace("isolated")

    def test_auto_falls_back_to_loopback(self):
        found = json.loads(self.run_in(self.isolated, PROBE)[0])
        self.assertEqual(found, {"auto": "127.0.0.1", "addresses": ["127.0.0.1"]})

    def test_server_reports_access_limited(self):
        process, started, errors = self.serve_in(self.isolated)
        self.assertEqual(started["url"], "http://127.0.0.1:%d/" % PORT)
        self.assertTrue(started["access_limited"])
        self.assertEqual(started["local"], '{"STACK_SIZE": 0, "EXPO": "0:00:00"}')
        self.assertIn("limited", self.finish(process, errors))

    def test_stale_host_name_address_does_not_hide_the_limit(self):
        self.stale_hosts_file(self.isolated)
        found = json.loads(self.run_in(self.isolated, PROBE)[0])
        self.assertEqual(found, {"auto": "127.0.0.1", "addresses": ["127.0.0.1"]})


if __name__ == "__main__":
    unittest.main()

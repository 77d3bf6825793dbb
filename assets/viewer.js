/* alsserve live viewer: the latest stacked image, zoom/pan, live over ws, history. */
(function () {
  'use strict';

  var MIN_ZOOM = 0.25, MAX_ZOOM = 20, STEP = 2;
  // Reconnect delays (ms): quick at first, the astronomer restarts within seconds.
  var RETRY = [500, 1000, 1000, 2000, 2000, 3000, 5000, 8000, 13000, 20000, 30000];
  var STALE_MIN = 120000;   // stale: no new image for 2 min (or 3 usual intervals)
  var PLAY_STEP = 250;      // time-lapse: 4 frames/s when frames load that fast
  var PLAY_HOLD = 1000;     // pause on the newest frame before looping
  // Boost levels: brightness (the image drawn again, added) and, without a
  // canvas, CSS filters (WPE does not draw CSS filters on a canvas).
  var GAIN = [1, 1.5, 2.2, 3.2];
  var BOOST = ['', 'brightness(1.5) contrast(1.15)', 'brightness(2.2) contrast(1.3)',
    'brightness(3.2) contrast(1.5)'];
  var STATE_TEXT = {
    connecting: 'connecting\u2026', live: 'live', reconnecting: 'reconnecting\u2026',
    stopped: 'Image server stopped', offline: 'offline'
  };

  function $(id) { return document.getElementById(id); }
  function clamp(v, lo, hi) { return v < lo ? lo : v > hi ? hi : v; }
  function now() { return Date.now(); }
  function show(el, on) { el.hidden = !on; }
  function setText(el, t) { if (el.textContent !== t) el.textContent = t; }
  function load(k) { try { return localStorage.getItem('alsserve.' + k); } catch (e) { return null; } }
  function save(k, v) { try { localStorage.setItem('alsserve.' + k, String(v)); } catch (e) { /* private mode */ } }

  var body = document.body, stage = $('stage'), dl = $('download'), connEl = $('conn');
  var stackEl = $('stack'), expoEl = $('expo'), metricsEl = $('metrics'), ageEl = $('age');
  var progEl = $('progress'), pbarEl = $('pbar'), ptextEl = $('ptext'), retryBox = $('retrybox');

  /* ---------- view */
  // zoom is relative to the fitted size; (cx, cy) is the image point (0..1) at
  // the viewport centre. Both survive image swaps (live, scrubbing, playing).
  var pic = null, nw = 0, nh = 0, vw = 1, vh = 1, zoom = 1, cx = 0.5, cy = 0.5;
  // The image is decoded once into an ImageBitmap and drawn into a canvas the
  // size of the screen; a replaced bitmap is closed at once, so the page holds
  // one decoded image (with <img> the browser keeps recent decoded copies).
  // Browsers without createImageBitmap show an <img>.
  // #view is an empty box where the image is (geometry for scripts and tests).
  var cv = window.createImageBitmap ? document.createElement('canvas') : null;
  var g = cv && cv.getContext('2d'), drawing = false, box = document.createElement('div');
  if (g) { cv.id = 'pic'; box.id = 'view'; stage.appendChild(cv); stage.appendChild(box); } else cv = null;

  function measure() {
    vw = stage.clientWidth || window.innerWidth || 1;
    vh = stage.clientHeight || window.innerHeight || 1;
  }
  function fitScale() { return nw && nh ? Math.min(vw / nw, vh / nh) : 1; }
  function scale() { return fitScale() * zoom; }

  function render() {
    if (!pic) return;
    var s = scale();
    var tx = vw / 2 - cx * nw * s, ty = vh / 2 - cy * nh * s;
    (cv ? box : pic).style.transform = 'translate(' + tx.toFixed(2) + 'px,' + ty.toFixed(2) + 'px) scale(' + s.toPrecision(8) + ')';
    if (cv && !drawing) { drawing = true; requestAnimationFrame(draw); }   // one draw a frame
  }

  function draw() {
    drawing = false;
    var d = window.devicePixelRatio || 1, w = Math.round(vw * d), h = Math.round(vh * d), s = scale();
    if (cv.width !== w || cv.height !== h) { cv.width = w; cv.height = h; }
    g.setTransform(1, 0, 0, 1, 0, 0);
    g.clearRect(0, 0, w, h);
    if (!pic) return;
    g.imageSmoothingQuality = 'medium';
    g.setTransform(s * d, 0, 0, s * d, (vw / 2 - cx * nw * s) * d, (vh / 2 - cy * nh * s) * d);
    g.drawImage(pic, 0, 0);
    g.globalCompositeOperation = 'lighter';
    for (var k = GAIN[boost] - 1; k > 0; k--) { g.globalAlpha = Math.min(1, k); g.drawImage(pic, 0, 0); }
    g.globalAlpha = 1;
    if (red) {   // red-only: grey (saturation blend), then times red; on the image only
      g.globalCompositeOperation = 'saturation'; g.fillStyle = '#888'; g.fillRect(0, 0, nw, nh);
      g.globalCompositeOperation = 'multiply'; g.fillStyle = '#f00'; g.fillRect(0, 0, nw, nh);
    }
    g.globalCompositeOperation = 'source-over';
  }

  function setView(z, x, y) {
    zoom = clamp(z, MIN_ZOOM, MAX_ZOOM);
    if (Math.abs(zoom - 1) < 1e-9) zoom = 1;
    cx = clamp(x, 0, 1);
    cy = clamp(y, 0, 1);
    render();
  }

  // Zoom by factor f keeping the image point under viewport pixel (px, py) fixed.
  function zoomAt(f, px, py) {
    if (!nw) return;
    if (px == null) { px = vw / 2; py = vh / 2; }
    var s = scale();
    var ux = cx + (px - vw / 2) / (nw * s), uy = cy + (py - vh / 2) / (nh * s);
    var z = clamp(zoom * f, MIN_ZOOM, MAX_ZOOM), s2 = fitScale() * z;
    setView(z, ux - (px - vw / 2) / (nw * s2), uy - (py - vh / 2) / (nh * s2));
  }

  function pan(dx, dy) {
    if (!nw) return;
    var s = scale();
    setView(zoom, cx - dx / (nw * s), cy - dy / (nh * s));
  }

  function home() { setView(1, 0.5, 0.5); }

  function onResize() { measure(); render(); }
  window.addEventListener('resize', onResize);
  window.addEventListener('orientationchange', onResize);
  if (window.ResizeObserver) new ResizeObserver(onResize).observe(stage);
  measure();

  /* ---------- input */
  var pointers = new Map(), pinch = null, multi = false, lastTap = null, lastType = 'mouse';

  function pinchInfo() {
    var it = pointers.values(), a = it.next().value, b = it.next().value;
    return { d: Math.max(1, Math.hypot(a.x - b.x, a.y - b.y)), x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 };
  }

  stage.addEventListener('pointerdown', function (e) {
    lastType = e.pointerType || 'mouse';
    if (lastType === 'mouse' && e.button !== 0) return;
    try { stage.setPointerCapture(e.pointerId); } catch (err) { /* synthetic pointer */ }
    pointers.set(e.pointerId, { x: e.clientX, y: e.clientY, sx: e.clientX, sy: e.clientY, t: now() });
    if (pointers.size === 1) multi = false;
    if (pointers.size >= 2) { multi = true; pinch = pinchInfo(); }
    stage.classList.add('drag');
    rouse();
    e.preventDefault();
  });

  stage.addEventListener('pointermove', function (e) {
    var p = pointers.get(e.pointerId);
    if (!p) return;
    var dx = e.clientX - p.x, dy = e.clientY - p.y;
    p.x = e.clientX; p.y = e.clientY;
    if (pointers.size === 1) {
      pan(dx, dy);
    } else if (pinch) {
      var n = pinchInfo();
      pan(n.x - pinch.x, n.y - pinch.y);
      zoomAt(n.d / pinch.d, n.x, n.y);
      pinch = n;
    }
    e.preventDefault();
  });

  function pointerEnd(e) {
    var p = pointers.get(e.pointerId);
    if (!p) return;
    pointers.delete(e.pointerId);
    pinch = pointers.size >= 2 ? pinchInfo() : null;
    if (!pointers.size) stage.classList.remove('drag');
    // double tap (touch): two short taps close together, one finger each
    if (e.type === 'pointerup' && e.pointerType === 'touch' && !multi && !pointers.size &&
        now() - p.t < 350 && Math.hypot(e.clientX - p.sx, e.clientY - p.sy) < 12) {
      var t = now();
      if (lastTap && t - lastTap.t < 400 && Math.hypot(e.clientX - lastTap.x, e.clientY - lastTap.y) < 40) {
        zoomAt(STEP, e.clientX, e.clientY);
        lastTap = null;
      } else {
        lastTap = { t: t, x: e.clientX, y: e.clientY };
      }
    }
  }
  stage.addEventListener('pointerup', pointerEnd);
  stage.addEventListener('pointercancel', pointerEnd);
  stage.addEventListener('lostpointercapture', function (e) { if (e.isTrusted) pointerEnd(e); });

  stage.addEventListener('dblclick', function (e) {
    e.preventDefault();
    if (lastType === 'touch') return; // handled as a double tap
    zoomAt(e.shiftKey ? 1 / STEP : STEP, e.clientX, e.clientY);
  });

  stage.addEventListener('wheel', function (e) {
    e.preventDefault();
    var d = e.deltaY;
    if (e.deltaMode === 1) d *= 16; else if (e.deltaMode === 2) d *= vh;
    d = clamp(d * (e.ctrlKey ? 4 : 1), -400, 400); // ctrl: trackpad pinch
    zoomAt(Math.exp(-d * 0.0025), e.clientX, e.clientY);
    rouse();
  }, { passive: false });

  // Safari's own pinch gestures would zoom the page instead of the image
  ['gesturestart', 'gesturechange'].forEach(function (n) {
    document.addEventListener(n, function (e) { e.preventDefault(); });
  });
  stage.addEventListener('contextmenu', function (e) { e.preventDefault(); });

  /* ---------- full screen */
  var root = document.documentElement;
  function fsElement() { return document.fullscreenElement || document.webkitFullscreenElement || null; }
  function toggleFullscreen() {
    var target = fsElement() ? document : root;
    var fn = target === document ? document.exitFullscreen || document.webkitExitFullscreen
      : root.requestFullscreen || root.webkitRequestFullscreen;
    var r = fn ? fn.call(target) : null;
    if (r && r.catch) r.catch(function () { });
  }
  if (!(document.fullscreenEnabled || document.webkitFullscreenEnabled)) $('fullpage').classList.add('off');

  function button(id, fn) {
    $(id).addEventListener('click', function (e) {
      e.preventDefault(); fn(); rouse();
      if (e.detail) this.blur(); // a pointer click leaves no focus ring behind
    });
  }
  button('zoomin', function () { zoomAt(STEP); });
  button('zoomout', function () { zoomAt(1 / STEP); });
  button('home', home);
  button('fullpage', toggleFullscreen);

  document.addEventListener('keydown', function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.target && e.target.id === 'scrub' && /Arrow|Home|End|Page/.test(e.key)) return;
    var k = e.key, step = 0.1;
    if (k === '+' || k === '=') zoomAt(STEP);
    else if (k === '-' || k === '_') zoomAt(1 / STEP);
    else if (k === '0') home();
    else if (k === 'f' || k === 'F') toggleFullscreen();
    else if (k === 'ArrowLeft') pan(vw * step, 0);
    else if (k === 'ArrowRight') pan(-vw * step, 0);
    else if (k === 'ArrowUp') pan(0, vh * step);
    else if (k === 'ArrowDown') pan(0, -vh * step);
    else return;
    e.preventDefault();
    rouse();
  });

  // dim the controls after a while without input; any change of state undims
  var idleTimer = 0;
  function rouse() {
    body.classList.remove('idle');
    clearTimeout(idleTimer);
    idleTimer = setTimeout(function () { body.classList.add('idle'); }, 6000);
  }
  document.addEventListener('pointermove', rouse, { passive: true });
  document.addEventListener('pointerdown', rouse, { passive: true });
  rouse();

  /* ---------- night vision display */
  var red = load('red') === '1', boost = clamp(parseInt(load('boost'), 10) || 0, 0, 3);

  function applyLook() {
    var css = red && !cv;   // without a canvas: a grey image times a red layer
    stage.style.filter = cv ? '' : BOOST[boost] + (css ? ' grayscale(1)' : '');
    $('redlayer').hidden = !css;
    render();
    $('red').setAttribute('aria-pressed', red);
    var b = $('boost');
    b.setAttribute('aria-pressed', boost > 0);
    b.setAttribute('data-level', boost ? boost : '');
    b.setAttribute('aria-label', 'Boost faint objects' + (boost ? ' (level ' + boost + ' of 3)' : ''));
  }
  button('red', function () { red = !red; save('red', red ? 1 : 0); applyLook(); });
  button('boost', function () { boost = (boost + 1) % 4; save('boost', boost); applyLook(); });
  applyLook();

  /* ---------- keep awake */
  // Off until asked for (battery, and a lit screen at a star party bothers
  // others); the choice is remembered. Screen Wake Lock where the browser has
  // it (secure contexts), else a video that plays: Blink counts a visible,
  // large, playing video (ours covers the page, under the image); WebKit only
  // an unmuted one with an audio track (silent) that loops by seeking.
  var awakeWanted = load('awake') === '1', sentinel = null, vid = null, requesting = false;
  var apple = /Apple/.test(navigator.vendor || '');

  function awakeHeld() { return !!sentinel || !!(vid && !vid.paused); }
  function awakeUi() {
    var a = $('awake');
    a.setAttribute('aria-pressed', awakeWanted);
    a.classList.toggle('held', awakeWanted && awakeHeld());
  }

  function engage() {
    if (!awakeWanted || document.hidden || awakeHeld() || requesting) return;
    if (navigator.wakeLock && navigator.wakeLock.request) {
      requesting = true;
      navigator.wakeLock.request('screen').then(function (s) {
        requesting = false;
        if (!awakeWanted) { s.release(); return; }
        sentinel = s;
        s.addEventListener('release', function () { if (sentinel === s) sentinel = null; awakeUi(); });
        awakeUi();
      }, function () { requesting = false; playVideo(); });
    } else {
      playVideo();
    }
  }

  function playVideo() {
    if (!awakeWanted) return;
    if (!vid) {
      vid = document.createElement('video');
      vid.id = 'awakevid';
      vid.muted = !apple;
      vid.setAttribute('playsinline', '');
      vid.setAttribute('aria-hidden', 'true');
      vid.preload = 'auto';
      vid.addEventListener('timeupdate', function () {
        if (vid.duration && vid.currentTime > vid.duration - 2) vid.currentTime = 0;
      });
      vid.addEventListener('ended', function () { vid.currentTime = 0; vid.play(); });
      vid.addEventListener('playing', awakeUi);
      vid.addEventListener('pause', awakeUi);
      vid.src = 'keepawake.mp4';
      body.insertBefore(vid, body.firstChild);
    }
    var p = vid.play();
    if (p && p.then) p.then(awakeUi, awakeUi); // refused without a tap: the next tap retries
  }

  function release() {
    if (sentinel) { var s = sentinel; sentinel = null; s.release(); }
    if (vid) vid.pause();
    awakeUi();
  }

  button('awake', function () {
    awakeWanted = !awakeWanted;
    save('awake', awakeWanted ? 1 : 0);
    if (awakeWanted) engage(); else release();
    awakeUi();
  });
  // iOS plays the video only from a gesture: any tap re-arms a wanted lock
  document.addEventListener('click', function () { engage(); }, true);
  document.addEventListener('touchend', function () { engage(); }, true);
  awakeUi();

  /* ---------- image downloads */
  // Policy: at most one download in flight, never aborted for a newer image
  // (restarting could starve on weak Wi-Fi). Announcements during a download
  // only mark the target; when it ends, its image is shown (newer than what
  // was on screen), then one more download fetches the newest known target.
  // So any number of announcements during one download cost 2 downloads.
  // Each image is downloaded to a Blob; the replaced one's object URL is
  // revoked and its element dropped, so the page holds one decoded image.
  var shown = null;        // {key, blobUrl, src, id, mod, at, skew, etag}
  var xhr = null, xhrKey = '', dirty = false, hiddenPending = false;
  var loads = 0, downloads = 0, failures = 0, retryTimer = 0, retryDelay = 2000;
  var webGen = 0, prog = null, intervals = 0, lastMod = 0;

  function target() {
    var f = viewIdx >= 0 ? frames[viewIdx] : liveFrame();
    if (f) return { key: 'f' + f.id, src: f.url, id: f.id, name: 'frame-' + f.id + '.jpg' };
    return { key: 'w' + webGen, src: 'web_image.jpg', id: null, name: 'web_image.jpg' };
  }

  function requestImage() {
    clearTimeout(retryTimer); retryTimer = 0;
    if (document.hidden) { hiddenPending = true; return; }
    var t = target();
    if (xhr) { if (t.key !== xhrKey) dirty = true; return; }
    if (shown && shown.key === t.key) { playNext(); return; }
    download(t);
  }

  function download(t) {
    var r = new XMLHttpRequest(), done = false;
    xhr = r; xhrKey = t.key; dirty = false; downloads++;
    prog = { loaded: 0, total: 0, start: now() };
    r.open('GET', t.src);
    r.responseType = 'blob';
    r.onprogress = function (e) {
      if (xhr !== r) return;
      prog.loaded = e.loaded; prog.total = e.lengthComputable ? e.total : 0;
      showProgress();
    };
    function fail() { if (!done) { done = true; finish(false); } }
    r.onerror = r.onabort = r.ontimeout = fail;
    r.onload = function () {
      if (r.status !== 200 || !r.response) { fail(); return; }
      var etag = r.getResponseHeader('ETag');
      var mod = Date.parse(r.getResponseHeader('Last-Modified') || '');
      var date = Date.parse(r.getResponseHeader('Date') || '');
      var meta = { key: t.key, src: t.src, id: t.id, name: t.name, etag: etag, mod: mod,
        at: now(), skew: isNaN(date) ? 0 : now() - date };
      if (shown && etag && shown.etag === etag && shown.src === t.src) { // unchanged (304)
        shown.key = t.key; done = true; finish(true, true); return;
      }
      var url = URL.createObjectURL(r.response), im;
      done = true;
      function bad() { URL.revokeObjectURL(url); finish(false); }
      if (cv) {
        createImageBitmap(r.response).then(function (b) { swap(b, b.width, b.height, url, meta); finish(true); }, bad);
        return;
      }
      im = new Image();
      im.decoding = 'sync';     // decoded when drawn, at the size drawn
      im.alt = 'Live stacked image';
      im.onload = function () { if (im.naturalWidth) { swap(im, im.naturalWidth, im.naturalHeight, url, meta); finish(true); } else bad(); };
      im.onerror = bad;
      im.src = url;
    };
    r.send();
  }

  function swap(p, w, h, url, meta) {
    var old = pic, oldUrl = shown && shown.blobUrl;
    nw = w; nh = h; pic = p;
    measure();
    if (cv) {
      box.style.width = w + 'px';
      box.style.height = h + 'px';
      render();
      draw();
      if (old) old.close();
    } else {
      p.id = 'view';
      p.setAttribute('width', w);
      p.setAttribute('height', h);
      render();          // position the new image before it is shown
      if (old) { stage.replaceChild(p, old); old.removeAttribute('src'); } else stage.appendChild(p);
    }
    if (oldUrl) URL.revokeObjectURL(oldUrl);
    if (meta.id === liveId || meta.id == null) {   // the live image: learn the usual interval
      if (lastMod && meta.mod > lastMod) intervals = meta.mod - lastMod;
      if (meta.mod) lastMod = meta.mod;
    }
    meta.blobUrl = url;
    shown = meta;
    dl.href = url;
    dl.setAttribute('download', meta.name);
  }

  function finish(ok, unchanged) {
    xhr = null; xhrKey = '';
    prog = null; showProgress();
    if (ok) {
      if (!unchanged) loads++;
      failures = 0; retryDelay = 2000;
      refreshMetrics();
      tick();
    } else failures++;
    if (dirty || ok) {
      dirty = false;
      var t = target();
      if (!shown || t.key !== shown.key) { download(t); return; }
      playNext();
    } else if (!retryTimer) {
      retryTimer = setTimeout(requestImage, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 30000);
    }
  }

  function mb(n) { return (n / 1e6).toFixed(n < 1e7 ? 1 : 0) + ' MB'; }
  function showProgress() {
    var p = prog, on = !!p && (p.loaded > 0 || now() - p.start > 400);
    show(progEl, on);
    if (!on) return;
    var frac = p.total ? p.loaded / p.total : 0;
    pbarEl.style.width = (p.total ? Math.round(frac * 100) : 5) + '%';
    setText(ptextEl, 'new image ' + (p.total ? Math.floor(frac * 100) + '% of ' + mb(p.total) : mb(p.loaded)));
  }

  // How old the shown image is, by the server's clock (Date vs Last-Modified).
  function ageMs() {
    if (!shown || !shown.mod) return null;
    return Math.max(0, now() - shown.skew - shown.mod);
  }
  function staleAfter() { return Math.max(STALE_MIN, 3 * intervals); }
  function span(ms) {
    var s = Math.round(ms / 1000);
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min';
    return Math.floor(s / 3600) + ' h ' + Math.floor(s % 3600 / 60) + ' min';
  }
  var wasStale = false;
  function tick() {
    var a = ageMs(), past = viewIdx >= 0;
    var stale = a != null && !past && conn === 'live' && a > staleAfter();
    setText(ageEl, a == null ? '' : past ? 'from the history' : stale ? 'no new image for ' + span(a)
      : 'updated ' + span(a) + ' ago');
    ageEl.className = stale ? 'stale' : '';
    if (stale !== wasStale) { wasStale = stale; rouse(); }
    body.classList.toggle('calm', conn === 'live' && !stale);
    if (reconnectAt) setText($('next'), 'next try in ' + Math.max(0, Math.ceil((reconnectAt - now()) / 1000)) + ' s');
    showProgress();
  }
  setInterval(tick, 1000);

  document.addEventListener('visibilitychange', function () {
    if (document.hidden) return;
    if (hiddenPending) { hiddenPending = false; requestImage(); }
    if (!ws && !opening) retryNow();
    engage();
  });
  window.addEventListener('online', function () { if (!ws && !opening) retryNow(); });

  /* ---------- metrics */
  // Hidden until a data.json exists (a stacker that writes none shows none).
  var stack = null, expo = null, mLoading = false, mDirty = false;

  function refreshMetrics() {
    if (mLoading) { mDirty = true; return; }
    mLoading = true;
    fetch('data.json', { cache: 'no-store' }).then(function (r) {
      if (r.status === 404) { stack = expo = null; return null; }
      if (!r.ok) throw new Error('HTTP ' + r.status);
      return r.json();
    }).then(showMetrics, function () { }).then(function () {
      mLoading = false;
      if (mDirty) { mDirty = false; refreshMetrics(); }
    });
  }

  function showMetrics(d) {
    if (d && typeof d === 'object') {
      var n = d.STACK_SIZE, t = d.EXPO;
      stack = typeof n === 'number' || typeof n === 'string' ? n : null;
      expo = typeof t === 'string' || typeof t === 'number' ? String(t) : null;
    }
    // the figures of the image on screen: a past frame's own, else the live ones
    var f = frames[viewIdx], s = f ? f.stack_size : stack, e = f ? f.exposure : expo;
    show(stackEl, s != null);
    show(expoEl, e != null);
    setText(stackEl, 'Stack: ' + s);
    setText(expoEl, 'Expo: ' + e);
    show(metricsEl, s != null || e != null);
  }

  /* ---------- history / timeline */
  // history.json lists the session's frames; "frame" messages add to it. The
  // live image loads through its immutable frame URL when there is one.
  var session = null, frames = [], liveId = null, heard = null, heardTimer = 0;
  var viewIdx = -1, newer = 0, playing = false, playTimer = 0, hLoading = false, hDirty = false;
  var scrub = $('scrub'), timeline = $('timeline');

  function validFrame(f) { return f && typeof f.id === 'number' && typeof f.url === 'string'; }
  function frameIndex(id) {
    for (var i = frames.length - 1; i >= 0; i--) if (frames[i].id === id) return i;
    return -1;
  }
  function liveFrame() { var i = liveId == null ? -1 : frameIndex(liveId); return i < 0 ? null : frames[i]; }

  function readHistory() {
    if (hLoading) { hDirty = true; return; }
    hLoading = true;
    fetch('history.json', { cache: 'no-cache' }).then(function (r) {
      if (r.status === 404) return { entries: [], live: null };
      if (!r.ok) throw new Error('HTTP ' + r.status);
      return r.json();
    }).then(applyHistory, function () { }).then(function () {
      hLoading = false;
      if (hDirty) { hDirty = false; readHistory(); } else requestImage();
    });
  }

  function applyHistory(h) {
    if (!h || typeof h !== 'object') return;
    var keep = viewIdx >= 0 ? frames[viewIdx] : null;
    session = h.session == null ? null : h.session;
    frames = (h.entries instanceof Array ? h.entries : []).filter(function (f) {   // this session's
      return validFrame(f) && (f.session === undefined || f.session === session);
    });
    liveId = typeof h.live === 'number' ? h.live : null;
    if (keep) { viewIdx = frameIndex(keep.id); if (viewIdx < 0) goLive(); }
    timelineUi();
  }

  function onFrame(m) {
    if (!validFrame(m)) return;
    if (m.session !== undefined && m.session !== session) { session = m.session; frames = []; if (viewIdx >= 0) goLive(); }
    if (!frames.length || m.id > frames[frames.length - 1].id) frames.push(m);
    heard = m;
    // a frame is followed by new_image; should that one be lost, act anyway
    clearTimeout(heardTimer);
    heardTimer = setTimeout(function () { if (heard) onNewImage(); }, 1500);
  }

  function onNewImage() {
    clearTimeout(heardTimer);
    if (heard) {
      liveId = heard.id; heard = null;
      if (viewIdx >= 0) newer++;
      timelineUi();
      requestImage();
    } else {               // web_image.jpg changed outside the history (or none)
      liveId = null; webGen++;
      requestImage();
      readHistory();
    }
  }

  function two(n) { return (n < 10 ? '0' : '') + n; }
  function clock(t) {
    var d = new Date(t * 1000);
    return two(d.getHours()) + ':' + two(d.getMinutes()) + ':' + two(d.getSeconds());
  }
  function describe(f) {
    var parts = [typeof f.time === 'number' ? clock(f.time) : '#' + f.id];
    if (f.stack_size != null) parts.push('Stack ' + f.stack_size);
    if (f.exposure) parts.push(f.exposure);
    return parts.join(' \u00b7 ');
  }

  function timelineUi() {
    var n = frames.length, on = n >= 2;
    show(timeline, on);
    body.classList.toggle('history', on);
    if (!on) { if (viewIdx >= 0 || playing) goLive(); return; }
    var li = liveId == null ? n - 1 : frameIndex(liveId), idx = viewIdx >= 0 ? viewIdx : li < 0 ? n - 1 : li;
    scrub.max = n - 1;
    if (document.activeElement !== scrub || !scrubbing) scrub.value = idx;
    setText($('tlabel'), describe(frames[scrubbing ? +scrub.value : idx]));
    var live = viewIdx < 0;
    timeline.classList.toggle('past', !live);
    $('golive').setAttribute('aria-pressed', live);
    setText($('newer'), !live && newer ? newer + (newer === 1 ? ' newer frame' : ' newer frames') : '');
    var p = $('play');
    p.setAttribute('aria-pressed', playing);
    p.setAttribute('aria-label', playing ? 'Pause time-lapse' : 'Play time-lapse');
    showMetrics();              // a past frame's own figures
    tick();
  }

  function goLive() {
    stopPlay();
    viewIdx = -1; newer = 0;
    timelineUi();
    requestImage();
  }

  function goTo(i) {
    if (i < 0 || i >= frames.length) return;
    if (viewIdx < 0) newer = 0;
    viewIdx = i;
    timelineUi();
    requestImage();
  }

  var scrubbing = false;
  function scrubTo() {
    var i = +scrub.value;
    stopPlay();
    if (i === frames.length - 1 && frames[i].id === liveId) goLive(); else goTo(i);
  }
  scrub.addEventListener('input', function () { scrubbing = true; scrubTo(); });
  scrub.addEventListener('change', function () { scrubbing = false; scrubTo(); });
  scrub.addEventListener('pointerdown', rouse);

  function stopPlay() { playing = false; clearTimeout(playTimer); playTimer = 0; }
  function playNext() {     // called whenever the wanted image is on screen
    if (!playing || playTimer) return;
    var last = viewIdx >= frames.length - 1;
    playTimer = setTimeout(function () {
      playTimer = 0;
      if (!playing) return;
      goTo(viewIdx >= frames.length - 1 ? 0 : viewIdx + 1);
    }, last ? PLAY_HOLD : PLAY_STEP);
  }
  button('play', function () {
    if (playing) { stopPlay(); timelineUi(); return; }
    if (frames.length < 2) return;
    playing = true;
    if (viewIdx < 0 || viewIdx >= frames.length - 1) goTo(0); else { timelineUi(); requestImage(); }
  });
  button('golive', goLive);

  /* ---------- WebSocket */
  var ws = null, opening = false, stopped = false, conn = 'connecting';
  var attempt = 0, reconnectTimer = 0, reconnectAt = 0, firstTimer = 0;

  function setConn(c) {
    if (c === conn && connEl.className === c) return;
    conn = c;
    connEl.className = c;
    connEl.textContent = STATE_TEXT[c] || c;
    show(retryBox, c === 'stopped' || c === 'reconnecting');
    rouse();
    tick();
  }

  function wsUrl() {     // relative to the page: works under any sub-path
    var dir = location.pathname.replace(/[^/]*$/, '');
    return (location.protocol === 'https:' ? 'wss:' : 'ws:') + '//' + location.host + dir + 'ws';
  }

  function connect() {
    clearTimeout(reconnectTimer); reconnectTimer = 0; reconnectAt = 0;
    setText($('next'), 'trying\u2026');
    var sock;
    try { sock = new WebSocket(wsUrl()); } catch (err) { scheduleReconnect(); return; }
    ws = sock; opening = true;
    sock.onopen = function () {
      if (ws !== sock) return;
      opening = false;
      clearTimeout(firstTimer);
      attempt = 0;
      stopped = false;
      setConn('live');
      // subscribed first, then (re)read: nothing published meanwhile is missed
      heard = null;
      webGen++;
      readHistory();
    };
    sock.onmessage = function (ev) {
      if (ws !== sock) return;
      var m;
      try { m = JSON.parse(ev.data); } catch (err) { return; }
      if (!m || typeof m !== 'object') return;
      if (m.type === 'history_entry') onFrame(m);
      else if (m.type === 'new_image') onNewImage();
      else if (m.type === 'disconnect') {
        stopped = true;
        setConn('stopped');
        try { sock.close(1000); } catch (err) { /* already closing */ }
      }
    };
    sock.onclose = function () {
      if (ws !== sock) return;
      ws = null; opening = false;
      setConn(stopped ? 'stopped' : 'reconnecting');
      if (!loads && !xhr) requestImage(); // show something even without a socket
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    if (reconnectTimer) return;
    var delay = RETRY[Math.min(attempt, RETRY.length - 1)];
    attempt++;
    reconnectAt = now() + delay;
    reconnectTimer = setTimeout(function () { reconnectTimer = 0; connect(); }, delay);
    tick();
  }

  function retryNow() {
    attempt = 0;
    if (ws || opening) return;
    connect();
  }
  button('retry', retryNow);

  /* ---------- debug hook */
  window.alsViewer = Object.freeze({
    state: function () {
      return {
        scale: scale(), zoom: zoom, fitScale: fitScale(), centerX: cx, centerY: cy,
        naturalWidth: nw, naturalHeight: nh, viewportWidth: vw, viewportHeight: vh,
        connection: conn, stack: stack, expo: expo, imageLoads: loads, downloads: downloads,
        imageLoading: !!xhr, imageDirty: dirty, imageUrl: shown ? shown.blobUrl : '', canvas: !!cv,
        imageSrc: shown ? shown.src : '', imageId: shown ? shown.id : null,
        imageAge: ageMs(), stale: wasStale, progress: prog ? { loaded: prog.loaded, total: prog.total } : null,
        reconnectAttempt: attempt, retryIn: reconnectAt ? Math.max(0, reconnectAt - now()) : null,
        fullscreen: !!fsElement(), red: red, boost: boost,
        awake: { wanted: awakeWanted, lock: !!sentinel, video: !!(vid && !vid.paused) },
        session: session, frames: frames.length, liveId: liveId, viewIndex: viewIdx,
        newer: newer, playing: playing
      };
    }
  });

  /* ---------- start */
  showMetrics(null);
  if (location.protocol === 'http:' || location.protocol === 'https:') {
    connect();     // the socket's open reads history.json, then the image
    // if the socket takes long to open, do not keep the page empty meanwhile
    firstTimer = setTimeout(function () { if (!loads && !xhr) readHistory(); }, 1500);
    engage();
  } else {
    setConn('offline');
    requestImage();
  }
})();

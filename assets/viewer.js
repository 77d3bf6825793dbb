/* alsserve live viewer: shows web_image.jpg, zoom/pan, live reload over /ws. */
(function () {
  'use strict';

  var MIN_ZOOM = 0.25, MAX_ZOOM = 20, STEP = 2;
  var BACKOFF_MIN = 1000, BACKOFF_MAX = 30000;
  var STATE_TEXT = {
    connecting: 'connecting\u2026',
    live: 'live',
    reconnecting: 'reconnecting\u2026',
    stopped: 'Image server stopped',
    offline: 'offline'
  };

  function $(id) { return document.getElementById(id); }
  function clamp(v, lo, hi) { return v < lo ? lo : v > hi ? hi : v; }

  var stage = $('stage'), dl = $('download'), connEl = $('conn');
  var stackEl = $('stack'), expoEl = $('expo');

  /* ---------------------------------------------------------------- view */
  // zoom is relative to the fitted size; (cx, cy) is the image point (0..1) at
  // the viewport centre. Both survive image swaps, so a new image of another
  // size keeps the same relative view.
  var img = null, nw = 0, nh = 0, vw = 1, vh = 1, zoom = 1, cx = 0.5, cy = 0.5;

  function measure() {
    vw = stage.clientWidth || window.innerWidth || 1;
    vh = stage.clientHeight || window.innerHeight || 1;
  }
  function fitScale() { return nw && nh ? Math.min(vw / nw, vh / nh) : 1; }
  function scale() { return fitScale() * zoom; }

  function render() {
    if (!img) return;
    var s = scale();
    var tx = vw / 2 - cx * nw * s, ty = vh / 2 - cy * nh * s;
    img.style.transform = 'translate(' + tx.toFixed(2) + 'px,' + ty.toFixed(2) + 'px) scale(' + s.toPrecision(8) + ')';
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

  /* -------------------------------------------------------------- input */
  var pointers = new Map(), pinch = null, multi = false, lastTap = null, lastType = 'mouse';

  function pinchInfo() {
    var it = pointers.values(), a = it.next().value, b = it.next().value;
    return {
      d: Math.max(1, Math.hypot(a.x - b.x, a.y - b.y)),
      x: (a.x + b.x) / 2, y: (a.y + b.y) / 2
    };
  }

  stage.addEventListener('pointerdown', function (e) {
    lastType = e.pointerType || 'mouse';
    if (lastType === 'mouse' && e.button !== 0) return;
    try { stage.setPointerCapture(e.pointerId); } catch (err) { /* synthetic pointer */ }
    pointers.set(e.pointerId, { x: e.clientX, y: e.clientY, sx: e.clientX, sy: e.clientY, t: Date.now() });
    if (pointers.size === 1) multi = false;
    if (pointers.size >= 2) { multi = true; pinch = pinchInfo(); }
    stage.classList.add('drag');
    wake();
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
      var now = pinchInfo();
      pan(now.x - pinch.x, now.y - pinch.y);
      zoomAt(now.d / pinch.d, now.x, now.y);
      pinch = now;
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
        Date.now() - p.t < 350 && Math.hypot(e.clientX - p.sx, e.clientY - p.sy) < 12) {
      var t = Date.now();
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
    wake();
  }, { passive: false });

  // Safari's own pinch gestures would zoom the page instead of the image
  ['gesturestart', 'gesturechange'].forEach(function (n) {
    document.addEventListener(n, function (e) { e.preventDefault(); });
  });
  stage.addEventListener('contextmenu', function (e) { e.preventDefault(); });

  /* ---------------------------------------------------------- full screen */
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
      e.preventDefault(); fn(); wake();
      if (e.detail) this.blur(); // a pointer click leaves no focus ring behind
    });
  }
  button('zoomin', function () { zoomAt(STEP); });
  button('zoomout', function () { zoomAt(1 / STEP); });
  button('home', home);
  button('fullpage', toggleFullscreen);

  document.addEventListener('keydown', function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
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
    wake();
  });

  // dim the controls after a while without input
  var idleTimer = 0;
  function wake() {
    document.body.classList.remove('idle');
    clearTimeout(idleTimer);
    idleTimer = setTimeout(function () { document.body.classList.add('idle'); }, 6000);
  }
  document.addEventListener('pointermove', wake, { passive: true });
  wake();

  /* -------------------------------------------------------------- image */
  // At most one load in flight plus one "dirty" flag: never a queue.
  var loading = false, dirty = false, loads = 0, hiddenPending = false;
  var retryTimer = 0, retryDelay = 2000, preloaded = false;

  function requestImage() {
    clearTimeout(retryTimer); retryTimer = 0;
    if (document.hidden) { hiddenPending = true; return; }
    if (loading) { dirty = true; return; }
    loadImage();
  }

  function loadImage() {
    loading = true; dirty = false;
    var url = 'web_image.jpg?timestamp=' + Date.now();
    var im = new Image(), settled = false;
    im.decoding = 'async';
    im.alt = 'Live stacked image';
    im.draggable = false;
    function ready() {
      if (settled) return;
      settled = true;
      if (im.naturalWidth > 0) { swap(im, url); finish(true); } else finish(false);
    }
    im.onload = function () {
      if (im.decode) im.decode().then(ready, ready); else ready();
    };
    im.onerror = function () { if (!settled) { settled = true; finish(false); } };
    im.src = url;
  }

  function swap(im, url) {
    var old = img;
    nw = im.naturalWidth; nh = im.naturalHeight;
    im.id = 'view';
    im.setAttribute('width', nw);
    im.setAttribute('height', nh);
    img = im;
    measure();
    render();          // position the new image before it is shown
    if (old && old.parentNode === stage) stage.replaceChild(im, old); else stage.appendChild(im);
    dl.href = url;
  }

  function finish(ok) {
    loading = false;
    if (ok) {
      loads++;
      retryDelay = 2000;
      refreshMetrics();
      if (!preloaded) preloadIcons();
    }
    if (dirty) { dirty = false; loadImage(); }
    else if (!ok && !retryTimer) {
      retryTimer = setTimeout(requestImage, retryDelay);
      retryDelay = Math.min(retryDelay * 2, BACKOFF_MAX);
    }
  }

  function preloadIcons() {
    preloaded = true;
    ['zoomin', 'zoomout', 'home', 'fullpage', 'download'].forEach(function (n) {
      ['grouphover', 'hover', 'pressed'].forEach(function (s) { new Image().src = 'icons/' + n + '_' + s + '.png'; });
    });
  }

  document.addEventListener('visibilitychange', function () {
    if (document.hidden) return;
    if (hiddenPending) { hiddenPending = false; requestImage(); }
    if (!ws && !opening) { backoff = BACKOFF_MIN; connect(); }
  });
  window.addEventListener('online', function () { if (!ws && !opening) { backoff = BACKOFF_MIN; connect(); } });

  /* ------------------------------------------------------------ metrics */
  var stack = null, expo = null, mLoading = false, mDirty = false;

  function refreshMetrics() {
    if (mLoading) { mDirty = true; return; }
    mLoading = true;
    fetch('data.json', { cache: 'no-store' }).then(function (r) {
      if (!r.ok) throw new Error('HTTP ' + r.status);
      return r.json();
    }).then(showMetrics, function () { }).then(function () {
      mLoading = false;
      if (mDirty) { mDirty = false; refreshMetrics(); }
    });
  }

  function showMetrics(d) {
    if (!d || typeof d !== 'object') return;
    var s = d.STACK_SIZE, e = d.EXPO;
    if (typeof s === 'number' || typeof s === 'string') stack = s;
    if (typeof e === 'string' || typeof e === 'number') expo = String(e);
    stackEl.textContent = 'Stack: ' + (stack == null ? '\u2013' : stack);
    expoEl.textContent = 'Expo: ' + (expo == null ? '\u2013' : expo);
  }

  /* ---------------------------------------------------------- WebSocket */
  var ws = null, opening = false, everOpen = false, stopped = false, conn = 'connecting';
  var backoff = BACKOFF_MIN, reconnectTimer = 0, firstLoadTimer = 0;

  function setConn(c) {
    conn = c;
    connEl.className = c;
    connEl.textContent = STATE_TEXT[c] || c;
  }

  function wsUrl() {
    var dir = location.pathname.replace(/[^/]*$/, '');
    return (location.protocol === 'https:' ? 'wss:' : 'ws:') + '//' + location.host + dir + 'ws';
  }

  function connect() {
    clearTimeout(reconnectTimer); reconnectTimer = 0;
    var sock;
    try { sock = new WebSocket(wsUrl()); } catch (err) { scheduleReconnect(); return; }
    ws = sock; opening = true;
    sock.onopen = function () {
      if (ws !== sock) return;
      opening = false;
      clearTimeout(firstLoadTimer);
      backoff = BACKOFF_MIN;
      stopped = false;
      everOpen = true;
      setConn('live');
      // subscribed first, then (re)load: nothing published meanwhile is missed
      requestImage();
    };
    sock.onmessage = function (ev) {
      if (ws !== sock) return;
      var m;
      try { m = JSON.parse(ev.data); } catch (err) { return; }
      if (!m || typeof m !== 'object') return;
      if (m.type === 'new_image') requestImage();
      else if (m.type === 'disconnect') {
        stopped = true;
        setConn('stopped');
        try { sock.close(1000); } catch (err) { /* already closing */ }
      }
    };
    sock.onclose = function () {
      if (ws !== sock) return;
      ws = null; opening = false;
      if (!stopped) setConn('reconnecting');
      if (!loads && !loading) requestImage(); // show something even without a socket
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    if (reconnectTimer) return;
    var delay = backoff;
    backoff = Math.min(backoff * 2, BACKOFF_MAX);
    reconnectTimer = setTimeout(function () { reconnectTimer = 0; connect(); }, delay);
  }

  /* --------------------------------------------------------- debug hook */
  window.alsViewer = Object.freeze({
    state: function () {
      return {
        scale: scale(), zoom: zoom, fitScale: fitScale(), centerX: cx, centerY: cy,
        naturalWidth: nw, naturalHeight: nh, viewportWidth: vw, viewportHeight: vh,
        connection: conn, stack: stack, expo: expo, imageLoads: loads,
        imageLoading: loading, imageDirty: dirty, imageUrl: img ? img.src : '',
        reconnectDelay: backoff, fullscreen: !!fsElement()
      };
    }
  });

  /* -------------------------------------------------------------- start */
  if (location.protocol === 'http:' || location.protocol === 'https:') {
    connect();
    // if the socket takes long to open, do not keep the page empty meanwhile
    firstLoadTimer = setTimeout(function () { if (!loads && !loading) requestImage(); }, 1500);
  } else {
    setConn('offline');
    requestImage();
  }
})();

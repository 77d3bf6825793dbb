/* SPDX-License-Identifier: MIT */
/* alsserve's viewer: the newest stacked image, live, and the night's history.
   One module per concern, joined at the end. */
(function () {
  'use strict';

  function byId(id) { return document.getElementById(id); }
  function clamp(value, low, high) { return value < low ? low : value > high ? high : value; }
  function now() { return Date.now(); }
  function nothing() {}
  function show(element, visible) { element.hidden = !visible; }
  function setText(element, text) { if (element.textContent !== text) element.textContent = text; }

  function onClick(id, action) {
    byId(id).addEventListener('click', function (event) {
      event.preventDefault();
      action();
      if (event.detail) this.blur();      // no focus ring after a pointer's click
    });
  }

  var preferences = {                     // private browsing may refuse localStorage
    read: function (name) {
      try { return localStorage.getItem('alsserve.' + name); } catch (error) { return null; }
    },
    write: function (name, value) {
      try { localStorage.setItem('alsserve.' + name, value); } catch (error) { /* not kept */ }
    }
  };

  /* One request in flight (weak Wi-Fi): asked again meanwhile, it fetches what is wanted
     once that one ends. spec: next, fetch(job, done), answer(job, answer, askedAgain), dropStale. */
  function createSingleFlight(spec) {
    var flight = { state: 'idle', ask: ask };     // 'idle' | 'busy' | 'again'
    function ask() {
      if (flight.state !== 'idle') { flight.state = 'again'; return; }
      var job = spec.next();
      if (job === null) return;
      flight.state = 'busy';
      spec.fetch(job, function (answer) {
        var askedAgain = flight.state === 'again';
        flight.state = 'idle';
        if (!askedAgain || !spec.dropStale) spec.answer(job, answer, askedAgain);
        if (askedAgain && flight.state === 'idle') ask();
      });
    }
    return flight;
  }

  // JSON, the newest answer only: a missing file is {}, a failure null.
  function createReader(url, cache, answer) {
    return createSingleFlight({
      next: function () { return url; },
      fetch: function (url, done) {
        fetch(url, { cache: cache }).then(function (response) {
          return response.status === 404 ? {} : response.ok ? response.json() : null;
        }).then(done, function () { done(null); });
      },
      answer: function (url, data) { answer(data); },
      dropStale: true
    });
  }

  function describe(entry, parts) {
    if (entry.stack_size != null) parts.push('Stack ' + entry.stack_size);
    if (entry.exposure) parts.push(entry.exposure);
    return parts.join(' \u00b7 ');
  }

  /* Zoom relative to the fitted size and the image point (0..1) mid-screen: both outlive an image. */
  function createView(stage) {
    var MIN_ZOOM = 0.25, MAX_ZOOM = 20;
    var view = {
      zoom: 1, centerX: 0.5, centerY: 0.5, imageWidth: 0, imageHeight: 0, width: 1, height: 1,
      onChange: nothing
    };
    view.measure = function () {
      view.width = stage.clientWidth || window.innerWidth || 1;
      view.height = stage.clientHeight || window.innerHeight || 1;
    };
    view.fitScale = function () {
      return view.imageWidth ? Math.min(view.width / view.imageWidth, view.height / view.imageHeight) : 1;
    };
    view.scale = function () { return view.fitScale() * view.zoom; };
    view.left = function () { return view.width / 2 - view.centerX * view.imageWidth * view.scale(); };
    view.top = function () { return view.height / 2 - view.centerY * view.imageHeight * view.scale(); };
    view.set = function (zoom, centerX, centerY) {
      view.zoom = clamp(zoom, MIN_ZOOM, MAX_ZOOM);
      if (Math.abs(view.zoom - 1) < 1e-9) view.zoom = 1;
      view.centerX = clamp(centerX, 0, 1);
      view.centerY = clamp(centerY, 0, 1);
      view.onChange();
    };
    view.zoomAt = function (factor, x, y) {
      if (!view.imageWidth) return;
      if (x == null) { x = view.width / 2; y = view.height / 2; }
      var dx = x - view.width / 2, dy = y - view.height / 2, before = view.scale();
      var zoom = clamp(view.zoom * factor, MIN_ZOOM, MAX_ZOOM), after = view.fitScale() * zoom;
      view.set(zoom, view.centerX + dx / (view.imageWidth * before) - dx / (view.imageWidth * after),
        view.centerY + dy / (view.imageHeight * before) - dy / (view.imageHeight * after));
    };
    view.pan = function (dx, dy) {
      if (!view.imageWidth) return;
      var scale = view.scale();
      view.set(view.zoom, view.centerX - dx / (view.imageWidth * scale), view.centerY - dy / (view.imageHeight * scale));
    };
    view.home = function () { view.set(1, 0.5, 0.5); };
    view.setImageSize = function (width, height) {
      view.imageWidth = width;
      view.imageHeight = height;
      view.measure();
    };

    function resized() { view.measure(); view.onChange(); }
    window.addEventListener('resize', resized);
    if (window.ResizeObserver) new ResizeObserver(resized).observe(stage);
    view.measure();
    return view;
  }

  /* One decoded image (two to compare), for flat memory: ImageBitmaps drawn into a screen-sized
     canvas, the replaced one closed (an <img> kept decoded copies). #view: where the image is. */
  function createPicture(stage, view) {
    var GAIN = [1, 1.5, 2.2, 3.2];
    var canvas = document.createElement('canvas'), box = document.createElement('div');
    var context = window.createImageBitmap ? canvas.getContext('2d') : null;
    var image = null, before = null, split = 0.5, red = false, boost = 0, drawQueued = false;

    if (context) {
      canvas.id = 'pic';
      box.id = 'view';
      stage.appendChild(canvas);
      stage.appendChild(box);
    }

    function render() {
      if (!image) return;
      (context ? box : image).style.transform = 'translate(' + view.left().toFixed(2) + 'px,' +
        view.top().toFixed(2) + 'px) scale(' + view.scale().toPrecision(8) + ')';
      if (context && !drawQueued) { drawQueued = true; requestAnimationFrame(draw); }
    }

    function draw() {
      drawQueued = false;
      var ratio = window.devicePixelRatio || 1, scale = view.scale() * ratio;
      var width = Math.round(view.width * ratio), height = Math.round(view.height * ratio);
      if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
      context.setTransform(1, 0, 0, 1, 0, 0);
      context.clearRect(0, 0, width, height);
      if (!image) return;
      context.imageSmoothingQuality = 'medium';
      context.setTransform(scale, 0, 0, scale, view.left() * ratio, view.top() * ratio);
      paint(image);
      if (before) {
        context.save();
        context.beginPath();
        context.rect(0, 0, (view.width * split - view.left()) / view.scale(), view.imageHeight);
        context.clip();
        paint(before);
        context.restore();
      }
      if (red) {                          // grey, then times red
        context.globalCompositeOperation = 'saturation';
        context.fillStyle = '#888';
        context.fillRect(0, 0, view.imageWidth, view.imageHeight);
        context.globalCompositeOperation = 'multiply';
        context.fillStyle = '#f00';
        context.fillRect(0, 0, view.imageWidth, view.imageHeight);
      }
      context.globalCompositeOperation = 'source-over';
    }

    // Boost drawn, not filtered: WPE draws no CSS filter on a canvas, WebKitGTK no SVG filter.
    function paint(source) {
      context.drawImage(source, 0, 0, view.imageWidth, view.imageHeight);
      context.globalCompositeOperation = 'lighter';
      for (var extra = GAIN[boost] - 1; extra > 0; extra--) {
        context.globalAlpha = Math.min(1, extra);
        context.drawImage(source, 0, 0, view.imageWidth, view.imageHeight);
      }
      context.globalAlpha = 1;
      context.globalCompositeOperation = 'source-over';
    }

    function replace(next, width, height) {
      var previous = image;
      image = next;
      view.setImageSize(width, height);
      if (context) {
        box.style.width = width + 'px';
        box.style.height = height + 'px';
        render();
        draw();
        if (previous) previous.close();
      } else {
        next.id = 'view';
        next.setAttribute('width', width);
        next.setAttribute('height', height);
        render();                         // placed before it shows
        if (previous) {
          stage.replaceChild(next, previous);
          previous.removeAttribute('src');
        } else stage.appendChild(next);
      }
    }

    function setLook(redOnly, boostLevel) {
      red = redOnly;
      boost = boostLevel;
      if (!context) {
        stage.style.filter = (boost ? 'brightness(' + GAIN[boost] + ') ' : '') + (red ? 'grayscale(1)' : '');
        show(byId('redlayer'), red);
      }
      render();
    }

    function compare(bitmap, fraction) {
      if (before && before !== bitmap) before.close();
      before = bitmap;
      split = fraction;
      render();
    }

    view.onChange = render;
    return { canvas: !!context, boostLevels: GAIN.length - 1, replace: replace, setLook: setLook, compare: compare };
  }

  function createLook(picture) {
    var look = {
      red: preferences.read('red') === '1',
      reticle: preferences.read('reticle') === '1',
      boost: clamp(parseInt(preferences.read('boost'), 10) || 0, 0, picture.boostLevels)
    };
    var boostButton = byId('boost');

    function apply() {
      picture.setLook(look.red, look.boost);
      show(byId('crosshair'), look.reticle);
      boostButton.setAttribute('aria-pressed', look.boost > 0);
      boostButton.setAttribute('data-level', look.boost || '');
      boostButton.setAttribute('aria-label', 'Boost faint objects' +
        (look.boost ? ' (level ' + look.boost + ' of ' + picture.boostLevels + ')' : ''));
      ['red', 'reticle'].forEach(function (name) { byId(name).setAttribute('aria-pressed', look[name]); });
    }
    ['red', 'reticle'].forEach(function (name) {
      onClick(name, function () {
        look[name] = !look[name];
        preferences.write(name, look[name] ? 1 : 0);
        apply();
      });
    });
    onClick('boost', function () {
      look.boost = (look.boost + 1) % (picture.boostLevels + 1);
      preferences.write('boost', look.boost);
      apply();
    });
    apply();
    return look;
  }

  /* The session's entries: history.json, then history_entry messages (live with the next new_image).
     mode: 'live', 'past' (an older entry) or 'playing'; comparing: the live image shown anyway. */
  function createHistory() {
    var history = {
      session: null, entries: [], liveId: null, mode: 'live', index: -1, newer: 0, comparing: false, onChange: nothing
    };
    var announced = null, announcedTimer = 0, webGeneration = 0;
    var reads = createReader('history.json', 'no-cache', function (data) {
      if (data) apply(data);
      history.onChange();
    });

    function valid(entry) { return entry && typeof entry.id === 'number' && typeof entry.url === 'string'; }
    function setLive() {
      history.mode = 'live';
      history.index = -1;
      history.newer = 0;
    }
    history.indexOf = function (id) {
      for (var i = history.entries.length - 1; i >= 0; i--) if (history.entries[i].id === id) return i;
      return -1;
    };
    history.chosenEntry = function () { return history.mode === 'live' ? null : history.entries[history.index]; };
    history.shownEntry = function () { return history.comparing ? null : history.chosenEntry(); };
    history.liveEntry = function () { return history.entries[history.indexOf(history.liveId)]; };
    history.beforeEntry = function () { return history.chosenEntry() || history.entries[0]; };

    function apply(data) {
      var kept = history.chosenEntry();
      history.session = data.session == null ? null : data.session;
      history.entries = (data.entries instanceof Array ? data.entries : []).filter(function (entry) {
        return valid(entry) && (entry.session === undefined || entry.session === history.session);
      });
      history.liveId = typeof data.live === 'number' ? data.live : null;
      if (kept) history.index = history.indexOf(kept.id);
      if (history.index < 0 || history.entries.length < 2) setLive();
    }

    history.addEntry = function (entry) {
      if (!valid(entry)) return;
      if (entry.session !== undefined && entry.session !== history.session) {
        history.session = entry.session;
        history.entries = [];
        setLive();
      }
      var last = history.entries[history.entries.length - 1];
      if (!last || entry.id > last.id) history.entries.push(entry);
      announced = entry;
      clearTimeout(announcedTimer);      // should the new_image be lost, act anyway
      announcedTimer = setTimeout(function () { if (announced) history.newImage(); }, 1500);
      if (reads.state !== 'idle') reads.ask();    // the answer on its way may predate it
    };

    history.newImage = function () {
      clearTimeout(announcedTimer);
      if (announced) {
        history.liveId = announced.id;
        announced = null;
        if (history.shownEntry()) history.newer++;
        history.onChange();
      } else {                            // changed outside the history, or none
        history.liveId = null;
        webGeneration++;
        history.onChange();
        reads.ask();
      }
    };

    // Subscribed first, then read: nothing published meanwhile is missed.
    history.connected = function () {
      announced = null;
      webGeneration++;
      reads.ask();
    };
    history.read = reads.ask;
    history.goLive = function () {
      setLive();
      history.onChange();
    };
    history.setComparing = function (comparing) {
      history.comparing = comparing;
      history.onChange();
    };
    history.goTo = function (index, mode) {
      if (index < 0 || index >= history.entries.length) return;
      if (history.mode === 'live') history.newer = 0;
      history.mode = mode;
      history.index = index;
      history.onChange();
    };

    // The live entry by its immutable URL: caches keep it.
    history.target = function () {
      var shown = history.shownEntry(), live = !shown, entry = shown || history.liveEntry();
      if (entry) {
        return { key: 'entry ' + entry.id, url: entry.url, id: entry.id, live: live,
          name: 'image-' + entry.url.replace(/^.*\//, '') };
      }
      return { key: 'web ' + webGeneration, url: 'web_image.jpg', id: null, live: true, name: 'web_image.jpg' };
    };
    return history;
  }

  /* Downloads, never aborted for a newer image (that starves on weak Wi-Fi): the finished
     one shows, then the newest. As Blobs: progress, and the download button costs nothing. */
  function createImages(picture, wanted) {
    var FIRST_RETRY = 2000, LAST_RETRY = 30000;
    var images = {
      shown: null,        // a target, with etag, modified, skew and objectUrl
      progress: null, loads: 0, downloads: 0,
      interval: 0,        // between the last two live images: stale after 3
      onProgress: nothing, onShown: nothing, onWantedShown: nothing
    };
    var link = byId('download'), retryTimer = 0, retryDelay = FIRST_RETRY, lastModified = 0;
    var waitingForVisible = false;
    var flight = createSingleFlight({ next: nextDownload, fetch: download, answer: answered });

    images.state = function () { return flight.state; };
    images.request = function () {
      clearTimeout(retryTimer);
      retryTimer = 0;
      if (document.hidden) { waitingForVisible = true; return; }
      flight.ask();
    };
    document.addEventListener('visibilitychange', function () {
      if (!document.hidden && waitingForVisible) { waitingForVisible = false; images.request(); }
    });

    // By the server's clock (Date against Last-Modified).
    images.age = function () {
      var shown = images.shown;
      return shown && shown.modified ? Math.max(0, now() - shown.skew - shown.modified) : null;
    };

    function nextDownload() {
      var target = wanted();
      if (!images.shown || images.shown.key !== target.key) return target;
      images.onWantedShown();             // already on screen: nothing to fetch
      return null;
    }

    function download(target, done) {
      var request = new XMLHttpRequest(), progress = { loaded: 0, total: 0, started: now() };
      images.downloads++;
      images.progress = progress;
      request.open('GET', target.url);
      request.responseType = 'blob';
      request.onprogress = function (event) {
        progress.loaded = event.loaded;
        progress.total = event.lengthComputable ? event.total : 0;
        images.onProgress();
      };
      request.onerror = request.onabort = request.ontimeout = function () { done(null); };
      request.onload = function () {
        if (request.status !== 200 || !request.response) { done(null); return; }
        var served = Date.parse(request.getResponseHeader('Date')), shown = images.shown;
        target.etag = request.getResponseHeader('ETag');
        target.modified = Date.parse(request.getResponseHeader('Last-Modified'));
        target.skew = isNaN(served) ? 0 : now() - served;
        if (shown && target.etag && shown.etag === target.etag && shown.url === target.url) {
          done({ unchanged: true });
          return;
        }
        target.objectUrl = URL.createObjectURL(request.response);
        decode(request.response, target.objectUrl, function (source, width, height) {
          if (source) done({ source: source, width: width, height: height });
          else { URL.revokeObjectURL(target.objectUrl); done(null); }
        });
      };
      request.send();
    }

    function decode(blob, objectUrl, done) {
      if (picture.canvas) {
        createImageBitmap(blob).then(function (bitmap) { done(bitmap, bitmap.width, bitmap.height); },
          function () { done(null); });
        return;
      }
      var element = new Image();
      element.decoding = 'sync';          // decoded at the size drawn
      element.alt = 'Live stacked image';
      element.onload = function () {
        done(element.naturalWidth ? element : null, element.naturalWidth, element.naturalHeight);
      };
      element.onerror = function () { done(null); };
      element.src = objectUrl;
    }

    function answered(target, result, askedAgain) {
      images.progress = null;
      images.onProgress();
      if (!result) {
        if (!askedAgain) {                // nothing newer wanted: later, again
          retryTimer = setTimeout(images.request, retryDelay);
          retryDelay = Math.min(retryDelay * 2, LAST_RETRY);
        }
        return;
      }
      if (result.unchanged) images.shown.key = target.key;
      else showImage(target, result);
      retryDelay = FIRST_RETRY;
      images.onShown();
      if (!askedAgain) images.onWantedShown();
    }

    function showImage(image, result) {
      var previous = images.shown;
      picture.replace(result.source, result.width, result.height);
      if (previous) URL.revokeObjectURL(previous.objectUrl);
      if (image.live) {
        if (lastModified && image.modified > lastModified) images.interval = image.modified - lastModified;
        if (image.modified) lastModified = image.modified;
      }
      images.shown = image;
      images.loads++;
      link.href = image.objectUrl;
      link.setAttribute('download', image.name);
    }
    return images;
  }

  function createMetrics() {
    var metrics = { stack: null, exposure: null, onChange: nothing };
    metrics.read = createReader('data.json', 'no-store', function (data) {
      if (!data) return;
      var stack = data.STACK_SIZE, exposure = data.EXPO;
      metrics.stack = typeof stack === 'number' || typeof stack === 'string' ? stack : null;
      metrics.exposure = typeof exposure === 'string' || typeof exposure === 'number' ? String(exposure) : null;
      metrics.onChange();
    }).ask;
    return metrics;
  }

  /* The WebSocket. state: 'connecting', 'live', 'reconnecting', 'stopped' (ALS's STOP) or
     'offline' (a file). Quick retries first: the astronomer restarts within seconds. */
  function createConnection() {
    var DELAYS = [500, 1000, 1000, 2000, 2000, 3000, 5000, 8000, 13000, 20000, 30000];
    var connection = {
      state: 'connecting', socket: null, attempt: 0, retryAt: 0,
      onChange: nothing, onOpen: nothing, onMessage: nothing, onClose: nothing
    };
    var retryTimer = 0;

    function setState(state) {
      connection.state = state;
      connection.onChange();
    }

    function open() {
      clearTimeout(retryTimer);
      retryTimer = 0;
      connection.retryAt = 0;
      var folder = location.pathname.replace(/[^/]*$/, ''), socket;   // relative: works under a sub-path
      try {
        socket = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + folder + 'ws');
      } catch (error) { scheduleRetry(); return; }
      connection.socket = socket;
      connection.onChange();
      socket.onopen = function () {
        connection.attempt = 0;
        setState('live');
        connection.onOpen();
      };
      socket.onmessage = function (event) {
        var message;
        try { message = JSON.parse(event.data); } catch (error) { return; }
        if (!message || typeof message !== 'object') return;
        if (message.type !== 'disconnect') { connection.onMessage(message); return; }
        setState('stopped');
        try { socket.close(1000); } catch (error) { /* already closing */ }
      };
      socket.onclose = function () {
        connection.socket = null;
        setState(connection.state === 'stopped' ? 'stopped' : 'reconnecting');
        connection.onClose();
        scheduleRetry();
      };
    }

    function scheduleRetry() {
      if (retryTimer) return;
      var delay = DELAYS[Math.min(connection.attempt, DELAYS.length - 1)];
      connection.attempt++;
      connection.retryAt = now() + delay;
      retryTimer = setTimeout(open, delay);
      connection.onChange();
    }

    function retryNow() {
      connection.attempt = 0;
      if (!connection.socket && connection.state !== 'offline') open();
    }

    connection.start = open;
    connection.goOffline = function () { setState('offline'); };
    onClick('retry', retryNow);
    document.addEventListener('visibilitychange', function () { if (!document.hidden) retryNow(); });
    window.addEventListener('online', retryNow);
    return connection;
  }

  function createOverlay(images, connection, history, metrics, server) {
    var STALE_AFTER = 120000;
    var STATE_TEXT = {
      connecting: 'connecting\u2026', live: 'live', reconnecting: 'reconnecting\u2026',
      stopped: 'Image server stopped', offline: 'offline'
    };
    var body = document.body, stateText = byId('conn'), ageText = byId('age'), nextTry = byId('next');
    var titleText = byId('title');
    var figures = byId('metrics'), stackText = byId('stack'), exposureText = byId('expo');
    var progressBox = byId('progress'), progressBar = byId('pbar'), progressText = byId('ptext');
    var overlay = { stale: false }, shownState = '', idleTimer = 0;

    // Dims when idle; input or a new state wakes it.
    function rouse() {
      body.classList.remove('idle');
      clearTimeout(idleTimer);
      idleTimer = setTimeout(function () { body.classList.add('idle'); }, 6000);
    }
    ['pointerdown', 'pointermove', 'keydown', 'wheel'].forEach(function (type) {
      document.addEventListener(type, rouse, { passive: true });
    });

    function megabytes(bytes) { return (bytes / 1e6).toFixed(bytes < 1e7 ? 1 : 0) + ' MB'; }
    function duration(ms) {
      var seconds = Math.round(ms / 1000);
      if (seconds < 60) return seconds + ' s';
      if (seconds < 3600) return Math.floor(seconds / 60) + ' min';
      return Math.floor(seconds / 3600) + ' h ' + Math.floor(seconds % 3600 / 60) + ' min';
    }

    function showProgress() {
      var progress = images.progress;
      var visible = !!progress && (progress.loaded > 0 || now() - progress.started > 400);
      show(progressBox, visible);
      if (!visible) return;
      var fraction = progress.total ? progress.loaded / progress.total : 0;
      progressBar.style.width = (progress.total ? Math.round(fraction * 100) : 5) + '%';
      setText(progressText, 'new image ' + (progress.total ?
        Math.floor(fraction * 100) + '% of ' + megabytes(progress.total) : megabytes(progress.loaded)));
    }

    // A past entry's own title and figures, else the live ones; text, never HTML.
    function showFigures() {
      var entry = history.shownEntry(), title = entry && 'title' in entry ? entry.title : server.title;
      var stack = entry ? entry.stack_size : metrics.stack, exposure = entry ? entry.exposure : metrics.exposure;
      show(titleText, title);
      setText(titleText, title);
      setText(document.querySelector('title'), title || 'ALS live image');
      show(stackText, stack != null);
      show(exposureText, exposure != null);
      setText(stackText, 'Stack: ' + stack);
      setText(exposureText, 'Expo: ' + exposure);
      show(figures, stack != null || exposure != null);
    }

    overlay.update = function () {
      var state = connection.state, age = images.age(), past = !!history.shownEntry();
      if (state !== shownState) {
        shownState = state;
        stateText.className = state;
        stateText.textContent = STATE_TEXT[state];
        show(byId('retrybox'), state === 'stopped' || state === 'reconnecting');
        rouse();
      }
      setText(nextTry, connection.retryAt ?
        'next try in ' + Math.max(0, Math.ceil((connection.retryAt - now()) / 1000)) + ' s' : 'trying\u2026');
      var stale = age !== null && !past && state === 'live' && age > Math.max(STALE_AFTER, 3 * images.interval);
      setText(ageText, age === null ? '' : past ? 'from the history' :
        stale ? 'no new image for ' + duration(age) : 'updated ' + duration(age) + ' ago');
      ageText.className = stale ? 'stale' : '';
      if (stale !== overlay.stale) { overlay.stale = stale; rouse(); }
      body.classList.toggle('calm', state === 'live' && !stale);
      showProgress();
      showFigures();
    };
    setInterval(overlay.update, 1000);
    rouse();
    return overlay;
  }

  function createTimeline(history) {
    var STEP = 250, HOLD = 1000;          // time-lapse; HOLD on the newest
    var box = byId('timeline'), scrub = byId('scrub'), label = byId('tlabel'), newerText = byId('newer');
    var playButton = byId('play'), liveButton = byId('golive');
    var scrubbing = false, playTimer = 0;

    function two(number) { return (number < 10 ? '0' : '') + number; }
    function clock(seconds) {
      var time = new Date(seconds * 1000);
      return two(time.getHours()) + ':' + two(time.getMinutes()) + ':' + two(time.getSeconds());
    }

    function update() {
      var count = history.entries.length, live = history.mode === 'live', playing = history.mode === 'playing';
      show(box, count >= 2);
      if (count < 2) return;
      var liveIndex = history.indexOf(history.liveId);
      var index = !live ? history.index : liveIndex < 0 ? count - 1 : liveIndex;
      scrub.max = count - 1;
      if (!scrubbing || document.activeElement !== scrub) scrub.value = index;
      var entry = history.entries[scrubbing ? +scrub.value : index], comparing = history.comparing;
      box.classList.toggle('past', !live);
      liveButton.setAttribute('aria-pressed', live);
      setText(label, comparing ? describe(history.beforeEntry(), ['Before']) :
        describe(entry, [typeof entry.time === 'number' ? clock(entry.time) : '#' + entry.id]));
      setText(newerText, comparing ? describe(history.liveEntry() || {}, ['After']) : live || !history.newer ? '' :
        history.newer + (history.newer === 1 ? ' newer image' : ' newer images'));
      playButton.setAttribute('aria-pressed', playing);
      playButton.setAttribute('aria-label', playing ? 'Pause time-lapse' : 'Play time-lapse');
    }

    function stopPlaying() {
      clearTimeout(playTimer);
      playTimer = 0;
    }
    // Called whenever the wanted image is on screen.
    function playNext() {
      if (history.mode !== 'playing' || playTimer) return;
      var atNewest = history.index >= history.entries.length - 1;
      playTimer = setTimeout(function () {
        playTimer = 0;
        if (history.mode !== 'playing') return;
        history.goTo(history.index >= history.entries.length - 1 ? 0 : history.index + 1, 'playing');
      }, atNewest ? HOLD : STEP);
    }

    function scrubbed() {
      var index = +scrub.value;
      stopPlaying();
      if (index === history.entries.length - 1 && history.entries[index].id === history.liveId) history.goLive();
      else history.goTo(index, 'past');
    }
    scrub.addEventListener('input', function () { scrubbing = true; scrubbed(); });
    scrub.addEventListener('change', function () { scrubbing = false; scrubbed(); });

    onClick('play', function () {
      if (history.mode === 'playing') {
        stopPlaying();
        history.goTo(history.index, 'past');
      } else if (history.entries.length >= 2) {
        var last = history.entries.length - 1;
        history.goTo(history.mode === 'live' || history.index >= last ? 0 : history.index, 'playing');
      }
    });
    onClick('golive', function () {
      stopPlaying();
      history.goLive();
    });
    return { update: update, playNext: playNext };
  }

  function createControls(stage, view) {
    var STEP = 2, pointers = [], lastTap = null, lastPointerType = 'mouse';
    var pinch = null;                     // the first two pointers' distance and midpoint
    var severalPointers = false;          // in this gesture, so its end is no tap

    function find(id) {
      for (var i = 0; i < pointers.length; i++) if (pointers[i].id === id) return i;
      return -1;
    }
    function pinchOf() {
      var a = pointers[0], b = pointers[1];
      return { distance: Math.max(1, Math.hypot(a.x - b.x, a.y - b.y)), x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 };
    }

    stage.addEventListener('pointerdown', function (event) {
      lastPointerType = event.pointerType || 'mouse';
      if (lastPointerType === 'mouse' && event.button !== 0) return;
      try { stage.setPointerCapture(event.pointerId); } catch (error) { /* a synthetic pointer */ }
      pointers.push({ id: event.pointerId, x: event.clientX, y: event.clientY, startX: event.clientX,
        startY: event.clientY, time: now() });
      severalPointers = pointers.length > 1;
      if (severalPointers) pinch = pinchOf();
      stage.classList.add('drag');
      event.preventDefault();
    });

    stage.addEventListener('pointermove', function (event) {
      var pointer = pointers[find(event.pointerId)];
      if (!pointer) return;
      var dx = event.clientX - pointer.x, dy = event.clientY - pointer.y;
      pointer.x = event.clientX;
      pointer.y = event.clientY;
      if (pointers.length === 1) {
        view.pan(dx, dy);
      } else if (pinch) {
        var next = pinchOf();
        view.pan(next.x - pinch.x, next.y - pinch.y);
        view.zoomAt(next.distance / pinch.distance, next.x, next.y);
        pinch = next;
      }
      event.preventDefault();
    });

    function pointerEnded(event) {
      var index = find(event.pointerId), pointer = pointers[index];
      if (!pointer) return;
      pointers.splice(index, 1);
      pinch = pointers.length > 1 ? pinchOf() : null;
      if (!pointers.length) stage.classList.remove('drag');
      // double tap: two short one-finger taps close together
      var x = event.clientX, y = event.clientY, time = now();
      if (event.type !== 'pointerup' || event.pointerType !== 'touch' || severalPointers || pointers.length ||
          time - pointer.time >= 350 || Math.hypot(x - pointer.startX, y - pointer.startY) >= 12) return;
      if (lastTap && time - lastTap.time < 400 && Math.hypot(x - lastTap.x, y - lastTap.y) < 40) {
        view.zoomAt(STEP, x, y);
        lastTap = null;
      } else {
        lastTap = { time: time, x: x, y: y };
      }
    }
    stage.addEventListener('pointerup', pointerEnded);
    stage.addEventListener('pointercancel', pointerEnded);
    stage.addEventListener('lostpointercapture', function (event) { if (event.isTrusted) pointerEnded(event); });

    stage.addEventListener('dblclick', function (event) {
      event.preventDefault();
      if (lastPointerType !== 'touch') view.zoomAt(event.shiftKey ? 1 / STEP : STEP, event.clientX, event.clientY);
    });

    stage.addEventListener('wheel', function (event) {
      event.preventDefault();
      var delta = event.deltaY * [1, 16, view.height][event.deltaMode || 0];    // pixels, lines, pages
      delta = clamp(delta * (event.ctrlKey ? 4 : 1), -400, 400);               // ctrl: trackpad pinch
      view.zoomAt(Math.exp(-delta * 0.0025), event.clientX, event.clientY);
    }, { passive: false });

    // Safari's pinch would zoom the page.
    ['gesturestart', 'gesturechange'].forEach(function (type) {
      document.addEventListener(type, function (event) { event.preventDefault(); });
    });
    stage.addEventListener('contextmenu', function (event) { event.preventDefault(); });

    function fullscreenElement() { return document.fullscreenElement || document.webkitFullscreenElement; }
    function toggleFullscreen() {
      var root = document.documentElement, leaving = !!fullscreenElement();
      var method = leaving ? document.exitFullscreen || document.webkitExitFullscreen :
        root.requestFullscreen || root.webkitRequestFullscreen;
      var result = method && method.call(leaving ? document : root);
      if (result && result.then) result.then(null, nothing);
    }
    show(byId('fullpage'), document.fullscreenEnabled || document.webkitFullscreenEnabled);

    function zoomIn() { view.zoomAt(STEP); }
    function zoomOut() { view.zoomAt(1 / STEP); }
    onClick('zoomin', zoomIn);
    onClick('zoomout', zoomOut);
    onClick('home', view.home);
    onClick('fullpage', toggleFullscreen);

    var KEYS = {
      '+': zoomIn, '=': zoomIn, '-': zoomOut, '_': zoomOut, '0': view.home, f: toggleFullscreen, F: toggleFullscreen,
      ArrowLeft: function () { view.pan(view.width / 10, 0); },
      ArrowRight: function () { view.pan(-view.width / 10, 0); },
      ArrowUp: function () { view.pan(0, view.height / 10); },
      ArrowDown: function () { view.pan(0, -view.height / 10); }
    };
    document.addEventListener('keydown', function (event) {
      if (event.ctrlKey || event.metaKey || event.altKey || !KEYS.hasOwnProperty(event.key)) return;
      if (event.target.id === 'scrub' && /Arrow/.test(event.key)) return;     // the scrubber's own
      KEYS[event.key]();
      event.preventDefault();
    });
    return { fullscreen: function () { return !!fullscreenElement(); } };
  }

  /* server.json, read again on a title message: the night's title, the Wi-Fi network. */
  function createServerInfo() {
    var server = { title: '', wifi: null, onChange: nothing };
    server.read = createReader('server.json', 'no-store', function (data) {
      if (!data) return;
      server.title = data.title || '';
      server.wifi = data.wifi || null;
      server.onChange();
    }).ask;
    return server;
  }

  /* The server's QR codes, red at night: this page as this phone opened it (a proxy, a sub-path),
     the Wi-Fi network. state: 'closed' or 'open'. */
  function createShare(server, look) {
    var share = { state: 'closed' }, panel = byId('sharepanel');

    // Only while open: an old image stays until the next loads, white at night.
    function source(id, url) {
      if (share.state === 'open' && url) byId(id).src = url;
      else byId(id).removeAttribute('src');
    }
    share.update = function () {
      var address = location.href.replace(/#.*/, ''), wifi = server.wifi, red = look.red ? 'red=1' : '';
      show(byId('wifistep'), wifi);
      setText(byId('ssid'), wifi ? wifi.ssid : '');
      source('wifiqr', wifi && 'share/wifi.svg?' + red);
      source('pageqr', 'share/qr.svg?text=' + encodeURIComponent(address) + (red && '&' + red));
    };
    function setState(state) {
      share.state = state;
      share.update();
    }
    onClick('share', function () {
      setState('open');
      panel.showModal();
    });
    panel.addEventListener('click', function () { panel.close(); });
    panel.addEventListener('close', function () { setState('closed'); });
    show(byId('share'), panel.showModal);
    return share;
  }

  /* Before and after: the timeline's entry (else the session's first) left of a draggable divider,
     the live image right of it. */
  function createCompare(picture, history, view) {
    var compare = { split: 0.5, beforeId: null }, button = byId('compare'), divider = byId('divider');
    var bitmap = null;
    var loads = createSingleFlight({
      next: function () {
        var entry = history.comparing && history.beforeEntry();
        return entry && entry.id !== compare.beforeId ? entry : null;
      },
      fetch: function (entry, done) {
        fetch(entry.url).then(function (response) { return response.blob(); }).then(createImageBitmap)
          .then(done, function () { done(null); });
      },
      answer: function (entry, loaded) {
        if (!loaded) return;
        if (!history.comparing) { loaded.close(); return; }
        bitmap = loaded;
        compare.beforeId = entry.id;
        draw();
      }
    });

    function draw() { picture.compare(bitmap, compare.split); }

    compare.update = function () {
      var on = history.comparing;
      button.disabled = !picture.canvas || history.entries.length < 2;
      if (on && button.disabled) { history.setComparing(false); return; }
      button.setAttribute('aria-pressed', on);
      show(divider, on);
      if (on) loads.ask();
      else {
        bitmap = compare.beforeId = null;
        draw();
      }
    };
    onClick('compare', function () { history.setComparing(!history.comparing); });

    divider.addEventListener('pointerdown', function (event) {
      divider.setPointerCapture(event.pointerId);
      event.preventDefault();
    });
    divider.addEventListener('pointermove', function (event) {
      if (!divider.hasPointerCapture(event.pointerId)) return;
      compare.split = clamp(event.clientX / view.width, 0, 1);
      divider.style.left = compare.split * 100 + '%';
      draw();
    });
    return compare;
  }

  /* Keep the screen on, once asked (battery; others at a star party): the Wake Lock, else a video
     under the image (Blink: large, visible; WebKit: with sound, ours silent, not looping).
     state: 'off', 'wanted' (nothing held), 'requesting', 'lock' or 'video'. */
  function createKeepAwake() {
    var keepAwake = { state: preferences.read('awake') === '1' ? 'wanted' : 'off' };
    var button = byId('awake'), lock = null, video = null;

    function setState(state) {
      keepAwake.state = state;
      button.setAttribute('aria-pressed', state !== 'off');
      button.classList.toggle('held', state === 'lock' || state === 'video');
    }

    keepAwake.engage = function () {
      if (keepAwake.state !== 'wanted' || document.hidden) return;
      if (!navigator.wakeLock || !navigator.wakeLock.request) { playVideo(); return; }
      setState('requesting');
      navigator.wakeLock.request('screen').then(function (sentinel) {
        if (keepAwake.state !== 'requesting') { sentinel.release(); return; }
        lock = sentinel;
        sentinel.addEventListener('release', function () {
          if (lock !== sentinel) return;
          lock = null;
          if (keepAwake.state === 'lock') setState('wanted');
        });
        setState('lock');
      }, function () {
        if (keepAwake.state !== 'requesting') return;
        setState('wanted');
        playVideo();
      });
    };

    function playVideo() {
      if (!video) {
        video = document.createElement('video');
        video.id = 'awakevid';
        video.muted = !/Apple/.test(navigator.vendor || '');
        video.setAttribute('playsinline', '');
        video.setAttribute('aria-hidden', 'true');
        video.preload = 'auto';
        video.addEventListener('timeupdate', function () {
          if (video.duration && video.currentTime > video.duration - 2) video.currentTime = 0;
        });
        video.addEventListener('ended', function () { video.currentTime = 0; video.play(); });
        video.addEventListener('playing', function () { if (keepAwake.state === 'wanted') setState('video'); });
        video.addEventListener('pause', function () { if (keepAwake.state === 'video') setState('wanted'); });
        video.src = 'keepawake.mp4';
        document.body.insertBefore(video, document.body.firstChild);
      }
      var playing = video.play();
      if (playing && playing.then) playing.then(null, nothing);    // refused: the next tap retries
    }

    onClick('awake', function () {
      var wanted = keepAwake.state === 'off';
      preferences.write('awake', wanted ? 1 : 0);
      setState(wanted ? 'wanted' : 'off');
      if (wanted) {
        keepAwake.engage();
      } else {
        if (lock) lock.release();
        lock = null;
        if (video) video.pause();
      }
    });
    // iOS plays the video only from a gesture: any tap.
    document.addEventListener('click', keepAwake.engage, true);
    document.addEventListener('touchend', keepAwake.engage, true);
    document.addEventListener('visibilitychange', keepAwake.engage);
    setState(keepAwake.state);
    return keepAwake;
  }

  /* Wiring */
  var stage = byId('stage');
  var view = createView(stage);
  var picture = createPicture(stage, view);
  var look = createLook(picture);
  var history = createHistory();
  var images = createImages(picture, history.target);
  var metrics = createMetrics();
  var connection = createConnection();
  var server = createServerInfo();
  var overlay = createOverlay(images, connection, history, metrics, server);
  var timeline = createTimeline(history);
  var controls = createControls(stage, view);
  var keepAwake = createKeepAwake();
  var share = createShare(server, look);
  var compare = createCompare(picture, history, view);

  history.onChange = function () {
    timeline.update();
    overlay.update();
    images.request();
    compare.update();
  };
  server.onChange = function () {
    overlay.update();
    share.update();
  };
  images.onProgress = overlay.update;
  images.onShown = function () {
    metrics.read();
    overlay.update();
  };
  images.onWantedShown = timeline.playNext;
  metrics.onChange = overlay.update;
  connection.onChange = overlay.update;
  connection.onOpen = function () {
    history.connected();
    server.read();
  };
  connection.onMessage = function (message) {
    if (message.type === 'history_entry') history.addEntry(message);
    else if (message.type === 'new_image') history.newImage();
    else if (message.type === 'title') server.read();
  };
  connection.onClose = function () {      // something to show, even without a socket
    if (!images.loads && images.state() === 'idle') images.request();
  };

  // The page's state, for scripts and tests.
  window.alsViewer = Object.freeze({
    state: function () {
      var shown = images.shown, progress = images.progress, download = images.state();
      return {
        scale: view.scale(), zoom: view.zoom, fitScale: view.fitScale(), centerX: view.centerX,
        centerY: view.centerY, naturalWidth: view.imageWidth, naturalHeight: view.imageHeight,
        viewportWidth: view.width, viewportHeight: view.height, canvas: picture.canvas,
        connection: connection.state, reconnectAttempt: connection.attempt,
        retryIn: connection.retryAt ? Math.max(0, connection.retryAt - now()) : null,
        stack: metrics.stack, expo: metrics.exposure,
        imageLoading: download !== 'idle', imageDirty: download === 'again',
        imageLoads: images.loads, downloads: images.downloads, imageUrl: shown ? shown.objectUrl : '',
        imageSrc: shown ? shown.url : '', imageId: shown ? shown.id : null, imageAge: images.age(),
        progress: progress && { loaded: progress.loaded, total: progress.total }, stale: overlay.stale,
        fullscreen: controls.fullscreen(), red: look.red, boost: look.boost,
        awake: { wanted: keepAwake.state !== 'off', lock: keepAwake.state === 'lock', video: keepAwake.state === 'video' },
        session: history.session, entries: history.entries.length, liveId: history.liveId,
        viewIndex: history.mode === 'live' ? -1 : history.index,
        newer: history.newer, playing: history.mode === 'playing',
        beforeId: compare.beforeId
      };
    }
  });

  overlay.update();
  if (location.protocol === 'http:' || location.protocol === 'https:') {
    connection.start();                   // once open: history.json, then the image
    setTimeout(function () {              // nor an empty page while a socket is slow to open
      if (connection.state !== 'live' && !images.loads && images.state() === 'idle') history.read();
    }, 1500);
    keepAwake.engage();
  } else {
    connection.goOffline();
    images.request();
  }
})();

"""The inline script of a preview page (plain JavaScript, no libraries, no network).

It reads the page's JSON data (``#km-data``: fps, :data:`koemorph.preview.geometry.LAYOUT`, styles,
and per track the shape numbers of every frame as base64 little-endian int16, pixels x ``scale``),
creates one SVG element per shape, and draws the frame at a time ``t`` (seconds) by linear
interpolation between grid frames ``floor(t * fps)`` and the next. ``t`` is the audio's playback
position while it plays or after a seek, and at load the ``#t=SECONDS`` of the URL. Drawing a frame
sets ``data-opening`` on each ``mouth`` element (pixels between the inner lip lines at the centre)
and ``data-time`` on ``<body>``.
"""

SCRIPT = r"""
(function () {
  'use strict';
  const D = JSON.parse(document.getElementById('km-data').textContent);
  const NS = 'http://www.w3.org/2000/svg';
  const audio = document.getElementById('km-audio');
  function decode(b64) {
    const s = atob(b64), bytes = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) bytes[i] = s.charCodeAt(i);
    return new Int16Array(bytes.buffer);
  }
  function build(track, k) {
    const svg = document.getElementById('km-face-' + k);
    const defs = document.createElementNS(NS, 'defs');
    svg.appendChild(defs);
    const els = [];
    let off = 0;
    for (const [name, kind, n] of D.layout) {
      const st = D.style[name] || {};
      const el = document.createElementNS(NS, kind);
      el.setAttribute('id', 'km-' + name + '-' + k);
      el.setAttribute('fill', st.fill || 'none');
      if (st.stroke) {
        el.setAttribute('stroke', st.stroke);
        el.setAttribute('stroke-width', st.width);
        el.setAttribute('stroke-linejoin', 'round');
        el.setAttribute('stroke-linecap', 'round');
      }
      if (st.opacity !== undefined) el.setAttribute('opacity', st.opacity);
      if (st.clip) {
        const clip = document.createElementNS(NS, 'clipPath');
        clip.setAttribute('id', 'km-clip-' + name + '-' + k);
        const use = document.createElementNS(NS, 'use');
        use.setAttribute('href', '#km-' + st.clip + '-' + k);
        clip.appendChild(use);
        defs.appendChild(clip);
        el.setAttribute('clip-path', 'url(#km-clip-' + name + '-' + k + ')');
      }
      svg.appendChild(el);
      const size = kind === 'circle' ? 3 : 2 * n;
      els.push({name: name, el: el, kind: kind, off: off, size: size});
      off += size;
    }
    return {data: decode(track.frames), n: track.n, els: els};
  }
  const tracks = D.tracks.map(build);
  const playhead = document.getElementById('km-playhead');
  const label = document.getElementById('km-time');
  function draw(t) {
    t = Math.max(0, t || 0);
    for (const tr of tracks) {
      const pos = Math.min(t * D.fps, tr.n - 1);
      const i = Math.floor(pos), j = Math.min(i + 1, tr.n - 1), w = pos - i;
      const a = i * D.stride, b = j * D.stride;
      const val = (q) => ((1 - w) * tr.data[a + q] + w * tr.data[b + q]) / D.scale;
      for (const s of tr.els) {
        if (s.kind === 'circle') {
          s.el.setAttribute('cx', val(s.off).toFixed(1));
          s.el.setAttribute('cy', val(s.off + 1).toFixed(1));
          s.el.setAttribute('r', Math.max(0, val(s.off + 2)).toFixed(1));
        } else {
          const pts = [];
          for (let q = 0; q < s.size; q += 2) {
            pts.push(val(s.off + q).toFixed(1) + ',' + val(s.off + q + 1).toFixed(1));
          }
          s.el.setAttribute('points', pts.join(' '));
        }
        if (s.name === 'mouth') {
          const up = val(s.off + 2 * D.mouth_upper + 1), low = val(s.off + 2 * D.mouth_lower + 1);
          s.el.setAttribute('data-opening', (low - up).toFixed(2));
        }
      }
    }
    if (playhead) {
      const x = D.curve_x0 + D.curve_w * Math.min(t / D.duration, 1);
      playhead.setAttribute('x1', x.toFixed(1));
      playhead.setAttribute('x2', x.toFixed(1));
    }
    if (label) label.textContent = 't = ' + t.toFixed(2) + ' s (frame ' + Math.round(t * D.fps) + ')';
    document.body.setAttribute('data-time', t.toFixed(3));
  }
  function fromHash() {
    const m = /(?:^|[#&])t=([0-9]*\.?[0-9]+)/.exec(location.hash);
    return m ? parseFloat(m[1]) : 0;
  }
  function seek(t) {
    draw(t);
    if (audio && audio.readyState >= 1) audio.currentTime = t;
  }
  let start = fromHash();
  draw(start);
  if (audio) {
    audio.addEventListener('loadedmetadata', function () {
      if (start > 0) audio.currentTime = start;
    });
    audio.addEventListener('seeked', function () { draw(audio.currentTime); });
    const loop = function () {
      draw(audio.currentTime);
      if (!audio.paused) requestAnimationFrame(loop);
    };
    audio.addEventListener('play', loop);
  }
  window.addEventListener('hashchange', function () { start = fromHash(); seek(start); });
  const link = document.getElementById('km-link');
  if (link) link.addEventListener('click', function () {
    const t = audio ? audio.currentTime : start;
    history.replaceState(null, '', '#t=' + t.toFixed(2));
    link.textContent = 'link: #t=' + t.toFixed(2);
  });
  const curves = document.getElementById('km-curves');
  if (curves) curves.addEventListener('click', function (ev) {
    const box = curves.getBoundingClientRect();
    const x = (ev.clientX - box.left) * (curves.viewBox.baseVal.width / box.width);
    seek(Math.max(0, Math.min(1, (x - D.curve_x0) / D.curve_w)) * D.duration);
  });
})();
"""

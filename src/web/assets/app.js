/*
 * lookalike moderator page: check a listing image against the catalog, compare it
 * with what it matched, and browse or prune the catalog. Plain JavaScript, no
 * dependencies; it talks only to this server's JSON API (see src/web/mod.rs).
 *
 * Stable hooks for tests and automation; tests/browser.rs relies on those marked *.
 *
 *   Check a listing (#view-check)
 * * #drop                        drop zone (an image dropped anywhere on the page counts;
 *                                Ctrl+V pastes one)
 * * #file-input                  <input type=file>; choosing a file starts a match
 *   #choose                      button that opens the file picker
 *   #brand-filter #label-filter #k #nearest   match options (a change re-runs the match)
 * * #query, #query-image         the listing image, shown from the local file (blob URL)
 * * #result[data-state]          idle | loading | done | error
 *   #status                      live status line
 * * #error[data-status][data-code]   the API's (or the network's) error; hidden when none
 * * #verdict[data-verdict]       KNOWN_FAKE | BRAND_PHOTO_REUSED | REVIEW | NO_MATCH | LOW_QUALITY
 *   #quality[data-quality]       PDQ quality 0-100 of the listing image
 * * #matches .match-card         one button per match, best first, with data-id,
 *                                data-external-id, data-label, data-distance (*), and
 *                                data-brand, data-orientation, data-closeness
 *     inside a card: * .match-thumb (img[data-src]), .match-label, .match-distance,
 *                    * .match-reading, * .match-view, * .match-confidence[data-confidence]
 *                    (when the API gives one), * .match-differs (when a part differed)
 * * #compare                     <dialog>, [open] while shown, with * #compare-query and
 *                                * #compare-stored (img[data-src]), #compare-close,
 *                                * #compare-align, #compare-entry, #compare-facts,
 *                                * #compare-confidence, * #compare-legend
 * * #compare-query-overlay, #compare-stored-overlay   <svg> over each picture, placed on
 *                                the picture itself (not its letterbox), viewBox in CSS px;
 *                                data-state shown | none, data-aligned; inside:
 *                                * polygon.ov-quad (the fitted outline), path.ov-outside
 *                                (shade outside it), * polygon.ov-differed (the part that
 *                                differed), text.ov-label
 *
 *   Catalog (#view-catalog)
 * * #nav-catalog, #nav-check     the two views (URLs #/catalog and #/check)
 * * #catalog-summary             live photos and brands, in the header
 *   #brands tr.brand-row[data-brand]
 * * button.count[data-brand][data-label]   a brand's photos with one label (the brand's
 *                                name is a button.brand-link with data-label "")
 * * #entries-panel[data-state]   idle | loading | done | error
 * * #entries .entry-card         one button per entry: data-id, data-label, data-external-id
 *   #pager-prev #pager-next #pager-info
 * * #entry-dialog                one entry: #entry-thumb #entry-facts * #entry-delete
 *                                #entry-error[data-status]
 * * #confirm-dialog              * #confirm-ok, #confirm-cancel
 *   #catalog-error[data-status], #toast
 *
 *   API key (servers started with --keys): #key-button opens #key-dialog (#key-input,
 *   #key-save, #key-forget); the key is kept in sessionStorage and sent as
 *   "Authorization: Bearer"; thumbnails are then fetched with it and shown from blob URLs.
 *   Every thumbnail <img> carries its API URL in data-src either way.
 *
 * URLs: #/check, #/catalog?brand=B&label=authentic|known_fake&offset=N
 */
(() => {
  'use strict';

  // ---------- small helpers ----------

  const $ = (selector, root = document) => root.querySelector(selector);
  const SVG_NS = 'http://www.w3.org/2000/svg';

  /** Build an element: h('a', {href, class, dataset, onclick}, child...). Text is never parsed as HTML. */
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value == null || value === false) continue;
      if (key === 'class') el.className = value;
      else if (key === 'dataset') {
        for (const [k, v] of Object.entries(value)) if (v != null) el.dataset[k] = String(v);
      } else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value === true ? '' : String(value));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const child of children.flat()) {
      if (child == null || child === false) continue;
      el.append(child instanceof Node ? child : String(child));
    }
    return el;
  }

  /** Replace an element's children, skipping null / false. */
  function fill(el, ...children) {
    el.replaceChildren();
    return append(el, children);
  }

  function icon(name, extra) {
    const svg = document.createElementNS(SVG_NS, 'svg');
    svg.setAttribute('class', extra ? `icon ${extra}` : 'icon');
    svg.setAttribute('aria-hidden', 'true');
    svg.setAttribute('focusable', 'false');
    const use = document.createElementNS(SVG_NS, 'use');
    use.setAttribute('href', `#i-${name}`);
    svg.append(use);
    return svg;
  }

  function setIcon(svg, name) {
    svg.querySelector('use').setAttribute('href', `#i-${name}`);
  }

  function formatBytes(n) {
    if (n < 1024) return `${n} bytes`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(n < 10240 ? 1 : 0)} KB`;
    return `${(n / 1024 / 1024).toFixed(1)} MB`;
  }

  function formatMs(ms) {
    if (ms < 1) return `${ms.toFixed(2)} ms`;
    if (ms < 100) return `${ms.toFixed(1)} ms`;
    return `${Math.round(ms)} ms`;
  }

  function formatDate(ms) {
    if (ms == null) return '—';
    return new Date(ms).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
  }

  const plural = (n, one, many) => `${n.toLocaleString()} ${n === 1 ? one : many}`;

  /** A key/value row for a <dl class="kv">. */
  function kv(term, ...value) {
    return h('div', { class: 'kv-row' }, h('dt', {}, term), h('dd', {}, ...value));
  }

  // ---------- labels, verdicts, readings ----------

  const LABELS = {
    authentic: { text: 'Authentic', icon: 'authentic', long: 'Authentic brand photo' },
    known_fake: { text: 'Known fake', icon: 'fake', long: 'Photo of a known counterfeit' },
  };

  function labelBadge(label) {
    const info = LABELS[label] || { text: label, icon: 'image' };
    return h('span', { class: `badge badge-${label} match-label`, dataset: { label } }, icon(info.icon), info.text);
  }

  const VERDICTS = {
    KNOWN_FAKE: {
      cls: 'v-known-fake', icon: 'known-fake', title: 'Known counterfeit',
      detail: (r, top) => top
        ? `This image matches a registered photo of a counterfeit: ${top.brand} / ${top.external_id} (${top.reading}).`
        : 'This image matches a registered photo of a counterfeit.',
    },
    BRAND_PHOTO_REUSED: {
      cls: 'v-reused', icon: 'reused', title: 'Brand photo reused',
      detail: (r, top) => top
        ? `This listing uses a copy of ${top.brand}’s own photo “${top.external_id}” — ${top.reading}, ${top.view}. Sellers of fakes often reuse official photos.`
        : 'This listing uses a copy of a brand’s own photo.',
    },
    REVIEW: {
      cls: 'v-review', icon: 'review', title: 'Needs review',
      detail: () => 'Something in the catalog looks similar, but not close enough to decide automatically. Compare the photos below and decide.',
    },
    NO_MATCH: {
      cls: 'v-no-match', icon: 'no-match', title: 'No match',
      detail: (r) => `Nothing in the catalog is within the review distance (${r.thresholds.review} bits) of this image.`,
    },
    LOW_QUALITY: {
      cls: 'v-low-quality', icon: 'low-quality', title: 'Too plain to judge',
      detail: (r) => `The image has too little detail for a reliable fingerprint (quality ${r.quality} of 100, minimum ${r.thresholds.min_quality}). No verdict: check it by eye.`,
    },
  };

  /** How to turn the listing so that it lines up with the stored photo, by the API's
   *  `orientation` (the turn its fingerprint needed): rotate clockwise by `rot` degrees
   *  after mirroring left-right if `flip`. */
  const ALIGN = {
    original: null,
    rotate90: { rot: 270, flip: false },
    rotate180: { rot: 180, flip: false },
    rotate270: { rot: 90, flip: false },
    flip_y: { rot: 0, flip: true },
    flip_x: { rot: 180, flip: true },
    transpose: { rot: 270, flip: true },
    transverse: { rot: 90, flip: true },
  };

  /** A small bar: where `distance` falls against the near-identical, flag and review limits. */
  function distanceMeter(distance, t) {
    const max = Math.max(64, t.review + 8);
    const pct = (v) => `${Math.min(100, (v / max) * 100).toFixed(1)}%`;
    const meter = h('span', {
      class: 'meter',
      'aria-hidden': 'true',
      title: `${distance} bits. 0–${t.near_identical}: near-identical · up to ${t.flag}: likely edited copy · up to ${t.review}: weak — review`,
    },
      h('span', { class: 'meter-zone zone-near', style: `width:${pct(t.near_identical)}` }),
      h('span', { class: 'meter-zone zone-flag', style: `left:${pct(t.near_identical)};width:${pct(t.flag - t.near_identical)}` }),
      h('span', { class: 'meter-zone zone-review', style: `left:${pct(t.flag)};width:${pct(t.review - t.flag)}` }),
      h('span', { class: 'meter-mark', style: `left:${pct(Math.min(distance, max))}` }));
    return meter;
  }

  const CONFIDENCE_HINT = 'How likely the listing is a copy of this catalog photo (0–1), from all the evidence: fingerprints, matching corners and the part-by-part comparison';

  /** A confidence (0–1) as the page shows it: two decimals, never a rounded-up 1 or down 0. */
  function formatConfidence(c) {
    if (typeof c !== 'number' || !Number.isFinite(c)) return null;
    if (c >= 0.995) return '> 0.99';
    if (c < 0.005) return '< 0.01';
    return c.toFixed(2);
  }

  const percent = (share) => (share > 0 && share < 0.01 ? 'under 1%' : `${Math.round(share * 100)}%`);

  // ---------- API key (for servers started with --keys) ----------

  const KEY_STORE = 'lookalike.apiKey';
  let apiKey = '';
  try {
    apiKey = sessionStorage.getItem(KEY_STORE) || '';
  } catch {
    apiKey = ''; // storage blocked: the key lasts until the page is reloaded
  }

  function withKey(headers) {
    return apiKey ? { ...(headers || {}), Authorization: `Bearer ${apiKey}` } : headers;
  }

  // An <img src> cannot send the key, so with a key images are fetched and shown from
  // blob URLs (kept per URL: a thumbnail never changes for an entry id).
  const imageCache = new Map();

  function setImage(img, url) {
    img.dataset.src = url;
    if (!apiKey) {
      img.src = url;
      return;
    }
    const cached = imageCache.get(url);
    if (cached) {
      img.src = cached;
      return;
    }
    img.removeAttribute('src');
    fetch(url, { headers: withKey({}) })
      .then((res) => {
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        return res.blob();
      })
      .then((blob) => {
        const blobUrl = URL.createObjectURL(blob);
        imageCache.set(url, blobUrl);
        if (img.dataset.src === url) img.src = blobUrl;
      })
      .catch(() => {
        if (img.dataset.src === url) img.dispatchEvent(new Event('error'));
      });
  }

  /** A thumbnail <img> that shows a placeholder in its frame if it cannot load. */
  function thumbImg(url, cls, props) {
    const img = h('img', {
      class: cls,
      alt: '',
      decoding: 'async',
      ...props,
      onerror: (e) => {
        const frame = e.target.closest('.thumb-frame');
        if (frame) frame.classList.add('is-missing');
      },
    });
    setImage(img, url);
    return img;
  }

  function setKey(key) {
    apiKey = key;
    try {
      if (key) sessionStorage.setItem(KEY_STORE, key);
      else sessionStorage.removeItem(KEY_STORE);
    } catch {
      // storage blocked: keep the key in memory only
    }
    for (const blobUrl of imageCache.values()) URL.revokeObjectURL(blobUrl);
    imageCache.clear();
    showKeyState();
  }

  function showKeyState() {
    $('#key-state').textContent = apiKey ? 'Key in use' : 'API key';
    $('#key-button').classList.toggle('has-key', !!apiKey);
  }

  function openKeyDialog() {
    const dlg = $('#key-dialog');
    const input = $('#key-input');
    input.value = apiKey;
    $('#key-forget').hidden = !apiKey;
    dlg.returnValue = '';
    if (!dlg.open) dlg.showModal();
    input.focus();
  }

  $('#key-button').addEventListener('click', openKeyDialog);
  $('#key-dialog').addEventListener('close', () => {
    const action = $('#key-dialog').returnValue;
    if (action !== 'save' && action !== 'forget') return;
    setKey(action === 'save' ? $('#key-input').value.trim() : '');
    $('#key-input').value = '';
    toast(apiKey ? 'The API key is used from now on (in this tab only).' : 'The API key is forgotten.');
    // Retry whatever is on screen with the new key.
    loadBrands();
    if (currentView === 'catalog') route();
    else runMatch();
  });

  // ---------- API ----------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  /** fetch + JSON; non-2xx answers become ApiError (status 0: no answer at all). */
  async function api(method, url, { body, signal, headers } = {}) {
    let res;
    try {
      res = await fetch(url, { method, body, signal, headers: withKey(headers), cache: 'no-store' });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new ApiError(0, 'NETWORK', 'No answer from the lookalike server.');
    }
    let text;
    try {
      text = await res.text();
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new ApiError(0, 'NETWORK', 'The connection broke while reading the answer.');
    }
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null; // not JSON: the text itself is the message
    }
    if (!res.ok) {
      const message = (data && data.error) || text.trim() || res.statusText || 'No details given.';
      const code = (data && data.code) || `HTTP_${res.status}`;
      throw new ApiError(res.status, code, message);
    }
    if (data === null || typeof data !== 'object') {
      throw new ApiError(res.status, 'BAD_RESPONSE', 'The server answered with something that is not JSON.');
    }
    return data;
  }

  /** Title and advice for an error, in words; `action` names what was being done. */
  function explain(err, action, notFound) {
    switch (err.status) {
      case 0: return { title: 'Cannot reach the server', hint: 'Check that `lookalike serve` is still running, then try again.', retry: true };
      case 400: return { title: `${action}: the server refused the request`, hint: 'See the reason below.' };
      case 401: return {
        title: `${action} needs permission`,
        hint: apiKey ? 'The server did not accept this API key.' : 'This server asks for an API key.',
        lock: true,
      };
      case 403: return {
        title: `${action} needs permission`,
        hint: 'Your API key is not allowed to do this. Ask whoever runs lookalike for access.',
        lock: true,
      };
      case 404: return { title: notFound || 'Not found', hint: 'It may have been deleted meanwhile.' };
      case 413: return { title: 'The image is too large', hint: 'The server refuses uploads over its size limit. Use a smaller copy of the image.' };
      case 429: return { title: 'The server is busy', hint: 'Too many images are being checked at once. Wait a moment and try again.', retry: true };
      case 504: return { title: 'The server took too long', hint: 'Try again in a moment.', retry: true };
      default:
        if (err.status >= 500) return { title: `${action}: server error`, hint: 'Try again; if it keeps happening, tell whoever runs lookalike.', retry: true };
        return { title: `${action} failed`, hint: '' };
    }
  }

  /** Fill an alert box with an error. */
  function showError(box, err, action, { onRetry, notFound, override } = {}) {
    const info = { ...explain(err, action, notFound), ...((override && override[err.status]) || {}) };
    fill(box,
      icon(info.lock ? 'lock' : 'error', 'alert-icon'),
      h('div', { class: 'alert-body' },
        h('p', { class: 'alert-title' }, info.title),
        h('p', { class: 'alert-message' }, err.message),
        h('p', { class: 'alert-meta' },
          info.hint ? h('span', {}, info.hint, ' ') : null,
          h('code', {}, err.status ? `HTTP ${err.status} · ${err.code}` : err.code)),
        info.retry && onRetry
          ? h('button', { type: 'button', class: 'btn btn-small', onclick: onRetry }, icon('retry'), 'Try again')
          : null,
        info.lock
          ? h('button', { type: 'button', class: 'btn btn-small', onclick: openKeyDialog }, icon('lock'),
            apiKey ? 'Use another API key' : 'Enter an API key')
          : null));
    box.dataset.status = String(err.status);
    box.dataset.code = err.code;
    box.hidden = false;
  }

  function clearError(box) {
    box.hidden = true;
    box.replaceChildren();
    delete box.dataset.status;
    delete box.dataset.code;
  }

  // ---------- toast ----------

  let toastTimer = 0;
  function toast(message) {
    const el = $('#toast');
    el.textContent = message;
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.hidden = true; }, 5000);
  }

  // ---------- views and URLs ----------

  const views = { check: $('#view-check'), catalog: $('#view-catalog') };
  const navs = { check: $('#nav-check'), catalog: $('#nav-catalog') };
  let currentView = '';

  function parseHash() {
    const raw = location.hash.replace(/^#\/?/, '');
    const [path, query = ''] = raw.split('?');
    const view = path.split('/')[0];
    return { view: view === 'catalog' ? 'catalog' : 'check', params: new URLSearchParams(query) };
  }

  function showView(name, focus) {
    for (const [key, el] of Object.entries(views)) el.hidden = key !== name;
    for (const [key, el] of Object.entries(navs)) {
      if (key === name) el.setAttribute('aria-current', 'page');
      else el.removeAttribute('aria-current');
    }
    document.title = name === 'catalog' ? 'Catalog — lookalike' : 'Check a listing — lookalike';
    if (focus && currentView && currentView !== name) $(name === 'catalog' ? '#catalog-title' : '#check-title').focus();
    currentView = name;
  }

  function route() {
    const { view, params } = parseHash();
    showView(view, true);
    if (view === 'catalog') {
      const label = params.get('label') || '';
      catalog.brand = params.get('brand') || '';
      catalog.label = label in LABELS ? label : '';
      catalog.offset = Math.max(0, parseInt(params.get('offset') || '0', 10) || 0);
      loadBrands().then(() => {
        // Only admin keys may list every brand at once: others start with their first brand.
        const data = catalog.brands;
        if (!catalog.brand && data && data.live == null && data.brands.length) {
          goCatalog(data.brands[0].brand, catalog.label, 0);
          return;
        }
        loadEntries();
      });
    }
  }

  function goCatalog(brand, label, offset) {
    const p = new URLSearchParams();
    if (brand) p.set('brand', brand);
    if (label) p.set('label', label);
    if (offset) p.set('offset', String(offset));
    const hash = `#/catalog${p.toString() ? `?${p}` : ''}`;
    if (location.hash === hash) route();
    else location.hash = hash;
  }

  // ---------- check a listing ----------

  const check = {
    file: null,
    fileUrl: '',
    alignedUrl: '',
    result: null,
    controller: null,
    seq: 0,
  };

  const resultEl = $('#result');

  function setResultState(state) {
    resultEl.dataset.state = state;
    resultEl.setAttribute('aria-busy', String(state === 'loading'));
  }

  function status(text) {
    $('#status').textContent = text;
  }

  function fileLabel(file) {
    return file.name && file.name !== 'image.png' ? file.name : 'Pasted image';
  }

  /** Take a new listing image (chosen, dropped or pasted) and match it. */
  function useFile(file) {
    if (!file) return;
    if (currentView !== 'check') location.hash = '#/check';
    if (check.fileUrl) URL.revokeObjectURL(check.fileUrl);
    check.file = file;
    check.fileUrl = URL.createObjectURL(file);
    const img = $('#query-image');
    $('#query-noprev').hidden = true;
    img.hidden = false;
    img.src = check.fileUrl;
    $('#query-name').textContent = fileLabel(file);
    $('#query-size').textContent = formatBytes(file.size);
    $('#query').hidden = false;
    $('.check-layout').classList.add('has-query');
    runMatch();
  }

  $('#query-image').addEventListener('load', (e) => {
    const img = e.target;
    if (check.file) $('#query-size').textContent = `${img.naturalWidth} × ${img.naturalHeight} px · ${formatBytes(check.file.size)}`;
  });
  $('#query-image').addEventListener('error', (e) => {
    if (!check.fileUrl) return;
    e.target.hidden = true;
    $('#query-noprev').hidden = false;
  });

  function matchParams() {
    const p = new URLSearchParams({ k: $('#k').value });
    const brand = $('#brand-filter').value.trim();
    const label = $('#label-filter').value;
    if (brand) p.set('brand', brand);
    if (label) p.set('label', label);
    if ($('#nearest').checked) p.set('nearest', 'true');
    return p;
  }

  async function runMatch() {
    if (!check.file) return;
    if (check.controller) check.controller.abort();
    const controller = new AbortController();
    check.controller = controller;
    const seq = ++check.seq;
    const file = check.file;

    clearError($('#error'));
    $('#intro').hidden = true;
    $('#verdict').hidden = true;
    $('#facts').hidden = true;
    $('#tech').hidden = true;
    $('#matches-section').hidden = true;
    $('#matches').replaceChildren();
    setResultState('loading');
    status(`Checking ${fileLabel(file)}…`);

    const started = performance.now();
    try {
      const data = await api('POST', `/api/match?${matchParams()}`, {
        body: file,
        signal: controller.signal,
        headers: { 'Content-Type': file.type || 'application/octet-stream' },
      });
      if (seq !== check.seq) return;
      check.result = data;
      renderResult(data, performance.now() - started);
      setResultState('done');
      status(`Checked ${fileLabel(file)}: ${VERDICTS[data.verdict] ? VERDICTS[data.verdict].title : data.verdict}.`);
    } catch (err) {
      if (err.name === 'AbortError' || seq !== check.seq) return;
      check.result = null;
      showError($('#error'), err, 'Checking the image', {
        onRetry: runMatch,
        override: {
          400: /^image\b/i.test(err.message)
            ? { title: 'The server could not read this image', hint: 'It reads JPEG, PNG, WebP, GIF, BMP and TIFF files.' }
            : { title: 'The server refused these match options', hint: 'Check the options on the left.' },
        },
      });
      setResultState('error');
      status(`Could not check ${fileLabel(file)}.`);
    }
  }

  function renderResult(r, roundTripMs) {
    const info = VERDICTS[r.verdict] || { cls: 'v-review', icon: 'review', title: r.verdict, detail: () => '' };
    const top = r.matches[0];
    const verdict = $('#verdict');
    verdict.className = `verdict ${info.cls}`;
    verdict.dataset.verdict = r.verdict;
    setIcon($('.verdict-icon', verdict), info.icon);
    $('#verdict-title').textContent = info.title;
    $('#verdict-detail').textContent = info.detail(r, top);
    $('#verdict-code').textContent = r.verdict;
    verdict.hidden = false;

    const t = r.thresholds;
    const good = r.quality >= t.min_quality;
    const quality = $('#quality');
    quality.dataset.quality = String(r.quality);
    quality.classList.toggle('is-low', !good);
    $('#quality-value').textContent = `${r.quality} / 100 — ${good ? 'good' : `too low (minimum ${t.min_quality})`}`;
    $('#quality-bar').firstElementChild.style.width = `${Math.max(0, Math.min(100, r.quality))}%`;
    $('#match-count').textContent = r.matches.length ? plural(r.matches.length, 'photo', 'photos') : 'none';
    $('#timing').textContent = formatMs(roundTripMs);
    $('#timing').title = `fingerprint ${formatMs(r.hash_ms)}, search ${formatMs(r.search_ms)}, the rest is transfer`;
    $('#facts').hidden = false;

    const list = $('#matches');
    list.replaceChildren(...r.matches.map((m, i) => matchCard(m, i, t)));
    const none = $('#no-matches');
    if (r.matches.length) {
      none.hidden = true;
    } else {
      none.textContent = r.verdict === 'LOW_QUALITY'
        ? 'No matches: the fingerprint is not reliable enough to search with.'
        : `No catalog photo is within ${t.review} bits${$('#nearest').checked ? '' : ' — tick “Also show the nearest photos” to see the closest ones anyway'}.`;
      none.hidden = false;
    }
    $('#matches-section').hidden = false;

    fill($('#tech-list'),
      kv('PDQ hash', h('code', { class: 'hash' }, r.pdq)),
      kv('pHash', h('code', {}, r.phash || '—')),
      kv('Thresholds', `near-identical ≤ ${t.near_identical}, flag ≤ ${t.flag}, review ≤ ${t.review} bits; minimum quality ${t.min_quality}`),
      kv('Server time', `fingerprint ${formatMs(r.hash_ms)}, search ${formatMs(r.search_ms)}`));
    $('#tech').hidden = false;
  }

  function matchCard(m, i, t) {
    const thumb = thumbImg(m.thumbnail, 'match-thumb');
    const confidence = formatConfidence(m.confidence);
    const differed = !!(m.parts && m.parts.differed);
    const card = h('button', {
      type: 'button',
      class: `match-card closeness-${m.closeness}`,
      dataset: {
        id: m.id, externalId: m.external_id, brand: m.brand, label: m.label,
        distance: m.distance, orientation: m.orientation, closeness: m.closeness,
      },
      'aria-label': `Compare with ${m.brand} / ${m.external_id}: ${LABELS[m.label] ? LABELS[m.label].text : m.label}, distance ${m.distance}, ${m.reading}${confidence == null ? '' : `, confidence ${confidence}`}${differed ? ', a part differs' : ''}, ${m.view}`,
      onclick: () => openCompare(m),
    },
    h('span', { class: 'thumb-frame' }, thumb, h('span', { class: 'thumb-missing' }, icon('image'), 'No thumbnail'),
      h('span', { class: 'match-rank' }, `${i + 1}`)),
    h('span', { class: 'match-body' },
      h('span', { class: 'match-top' }, labelBadge(m.label),
        h('span', { class: 'match-distance', title: `${m.distance} of 256 bits differ` }, h('strong', {}, String(m.distance)), ' bits')),
      h('span', { class: 'match-name' }, h('span', { class: 'match-brand' }, m.brand), h('span', { class: 'sep' }, ' / '),
        h('span', { class: 'match-ext' }, m.external_id)),
      distanceMeter(m.distance, t),
      h('span', { class: `match-reading reading-${m.closeness}` }, m.reading),
      confidence == null ? null : h('span', {
        class: 'match-confidence',
        dataset: { confidence: m.confidence },
        title: CONFIDENCE_HINT,
      }, 'confidence ', h('strong', {}, confidence)),
      differed ? h('span', { class: 'match-differs' }, icon('fake'), 'a part differs — another logo?') : null,
      h('span', { class: 'match-view' }, icon('view'), m.view)));
    return h('li', {}, card);
  }

  // ---------- comparison dialog ----------

  // shownAligned: whether the listing image on screen now is the turned-back one (it
  // changes when that image has loaded, not when the button is pressed).
  const compare = { match: null, aligned: false, shownAligned: false };

  function openCompare(m) {
    compare.match = m;
    compare.aligned = false;
    const dlg = $('#compare');
    $('#compare-title').textContent = `Listing vs. ${m.brand} / ${m.external_id}`;
    const confidence = formatConfidence(m.confidence);
    const pill = $('#compare-confidence');
    pill.textContent = confidence == null ? '' : `confidence ${confidence}`;
    pill.hidden = confidence == null;
    $('#compare-sub').replaceChildren(`${m.distance} of 256 bits differ — ${m.reading}; the listing is ${m.view === 'same orientation' ? 'in the same orientation' : m.view}.`);
    compare.shownAligned = false;
    clearOverlays();
    $('#compare-query').style.transform = '';
    setImage($('#compare-stored'), m.thumbnail);
    const align = $('#compare-align');
    align.hidden = !ALIGN[m.orientation];
    setAligned(false);
    fillLegend(m);

    const p = m.parts;
    fill($('#compare-facts'),
      confidence == null ? null : kv('Confidence', h('strong', {}, confidence), ' — how likely the listing is a copy of this photo'),
      kv('Distance', h('strong', {}, `${m.distance}`), ` of 256 bits — ${m.reading}`),
      p ? kv('Compared part by part',
        `${percent(p.agreement)} of ${plural(p.detail_cells, 'detailed patch', 'detailed patches')} agree; the listing shows ${percent(p.in_view)} of the catalog photo`) : null,
      p && p.differed ? kv('Part that differs', h('span', { class: 'differs-text' }, 'another logo?'),
        ` — ${percent(p.differed.share)} of the detail compared, outlined on both pictures; a match like this goes to review instead of being flagged`) : null,
      kv('How the listing relates', m.view),
      kv('Label', labelBadge(m.label)),
      kv('Brand', m.brand),
      kv('External id', h('code', {}, m.external_id)),
      kv('Note', m.note || h('span', { class: 'muted' }, 'none')),
      kv('Source', m.source ? h('code', { class: 'wrap' }, m.source) : h('span', { class: 'muted' }, 'unknown')),
      kv('Entry', h('code', {}, `#${m.id}`)));
    if (!dlg.open) dlg.showModal();
    $('#compare-close').focus();
    drawOverlays(); // pictures already loaded (the same listing, a cached thumbnail) fire no load event
  }

  function setAligned(on) {
    compare.aligned = on;
    const m = compare.match;
    const align = $('#compare-align');
    align.setAttribute('aria-pressed', String(on));
    align.textContent = on ? 'Show as uploaded' : 'Line up with catalog photo';
    if (check.alignedUrl) {
      URL.revokeObjectURL(check.alignedUrl);
      check.alignedUrl = '';
    }
    $('#compare-query-note').textContent = on ? '— turned back to line up' : '— as uploaded';
    const turned = $('#compare-legend .legend-aligned');
    if (turned) turned.hidden = !on;
    if (!on || !ALIGN[m.orientation]) {
      showListing(check.fileUrl, false);
      return;
    }
    // Draw the listing turned back on a canvas, so that rotated images keep their box.
    const source = $('#query-image');
    const { rot, flip } = ALIGN[m.orientation];
    const w = source.naturalWidth;
    const ht = source.naturalHeight;
    if (!w || !ht) return;
    const canvas = document.createElement('canvas');
    const swap = rot % 180 !== 0;
    canvas.width = swap ? ht : w;
    canvas.height = swap ? w : ht;
    const ctx = canvas.getContext('2d');
    ctx.translate(canvas.width / 2, canvas.height / 2);
    ctx.rotate((rot * Math.PI) / 180);
    if (flip) ctx.scale(-1, 1);
    ctx.drawImage(source, -w / 2, -ht / 2);
    canvas.toBlob((blob) => {
      if (!blob || !compare.aligned || compare.match !== m) return;
      check.alignedUrl = URL.createObjectURL(blob);
      showListing(check.alignedUrl, true);
    });
  }

  /** Show `url` as the compared listing; `aligned`: it is the listing turned back. The
   *  overlay follows once that image is on screen (its load event). */
  function showListing(url, aligned) {
    const q = $('#compare-query');
    q.dataset.aligned = String(aligned);
    q.src = url;
  }

  // ---------- evidence on the compared pictures ----------
  //
  // The part-by-part comparison (the API's `parts`) gives the fitted outline of each
  // picture in the other (`listing_quad`: the catalog photo's corners in the listing;
  // `stored_quad`: the listing's corners in the catalog photo; top-left, top-right,
  // bottom-right, bottom-left, as shares of the picture's width and height, possibly
  // outside 0–1), and the part of the catalog photo that the listing shows replaced
  // (`differed.rect`). Each is drawn on an <svg> laid exactly over the picture as
  // object-fit: contain draws it (not over its letterbox); whatever falls outside the
  // picture is clipped at its edge by the svg's own box.
  //
  // While "Line up with catalog photo" is on, the listing on screen is turned (rotated
  // and/or mirrored, see ALIGN): the listing's overlay is turned the same way, so it
  // stays on the same pixels of what is shown.

  function svgEl(tag, attrs) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) if (value != null) el.setAttribute(key, String(value));
    return el;
  }

  /** Where the point at shares (`s`, `t`) of the catalog photo falls in the listing,
   *  interpolated bilinearly between the corners of `quad` (close enough to the fitted
   *  projective transform for an outline). */
  function bilinear(quad, s, t) {
    const [a, b, c, d] = quad;
    return [0, 1].map((k) => (1 - s) * (1 - t) * a[k] + s * (1 - t) * b[k] + s * t * c[k] + (1 - s) * t * d[k]);
  }

  const rectCorners = ([x0, y0, x1, y1]) => [[x0, y0], [x1, y0], [x1, y1], [x0, y1]];

  /** A point at shares (`u`, `v`) of the listing as uploaded, in the listing turned back by
   *  `turn` (an ALIGN entry: mirrored left-right if `flip`, then rotated `rot` degrees
   *  clockwise about the centre — what setAligned draws on its canvas). */
  function turnShare([u, v], turn) {
    let x = u - 0.5;
    const y = v - 0.5;
    if (turn.flip) x = -x;
    const rad = (turn.rot * Math.PI) / 180;
    const [cos, sin] = [Math.round(Math.cos(rad)), Math.round(Math.sin(rad))];
    // A quarter turn swaps the width and the height: in shares the unit square maps onto itself.
    return [x * cos - y * sin + 0.5, x * sin + y * cos + 0.5];
  }

  /** The box (CSS px, relative to the image's frame) in which an object-fit: contain
   *  image draws its picture; null before it has loaded or while it is not laid out. */
  function pictureBox(img) {
    const nw = img.naturalWidth;
    const nh = img.naturalHeight;
    const frame = img.parentElement;
    if (!nw || !nh || img.hidden || !frame) return null;
    const ir = img.getBoundingClientRect();
    const fr = frame.getBoundingClientRect();
    if (ir.width < 2 || ir.height < 2) return null;
    const scale = Math.min(ir.width / nw, ir.height / nh);
    const width = nw * scale;
    const height = nh * scale;
    return {
      left: ir.left - fr.left - frame.clientLeft + (ir.width - width) / 2,
      top: ir.top - fr.top - frame.clientTop + (ir.height - height) / 2,
      width,
      height,
    };
  }

  const finitePoints = (points) => Array.isArray(points) && points.length === 4
    && points.every((pt) => Array.isArray(pt) && pt.length === 2 && pt.every(Number.isFinite));

  function clearOverlay(svg) {
    svg.replaceChildren();
    svg.setAttribute('hidden', ''); // an <svg> has no .hidden property
    svg.dataset.state = 'none';
    svg.removeAttribute('aria-label');
  }

  function clearOverlays() {
    clearOverlay($('#compare-query-overlay'));
    clearOverlay($('#compare-stored-overlay'));
  }

  /** Draw on `svg`, over `img`: the outline `quad` and the part `differed` (four points
   *  each, in shares of the picture), with the words `label` for screen readers. */
  function drawOverlay(svg, img, quad, differed, label) {
    const box = finitePoints(quad) ? pictureBox(img) : null;
    if (!box) {
      clearOverlay(svg);
      return;
    }
    const { width: w, height: ht } = box;
    Object.assign(svg.style, {
      left: `${box.left}px`, top: `${box.top}px`, width: `${w}px`, height: `${ht}px`,
    });
    svg.setAttribute('viewBox', `0 0 ${w} ${ht}`);
    const px = (points) => points.map(([x, y]) => [x * w, y * ht]);
    const pointList = (points) => px(points).map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' ');
    const outline = px(quad);
    // Shade what lies outside the outline: the part of this picture the other one does not show.
    const shade = svgEl('path', {
      class: 'ov-outside',
      'fill-rule': 'evenodd',
      d: `M0,0H${w}V${ht}H0Z M${outline.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join('L')}Z`,
    });
    const points = pointList(quad);
    const children = [
      shade,
      svgEl('polygon', { class: 'ov-halo', points }),
      svgEl('polygon', { class: 'ov-quad', points }),
    ];
    if (finitePoints(differed)) {
      const part = pointList(differed);
      const corners = px(differed);
      const xs = corners.map((c) => c[0]);
      const ys = corners.map((c) => c[1]);
      const [x0, y0, y1] = [Math.min(...xs), Math.min(...ys), Math.max(...ys)];
      // The tag sits above the part, or below it at the picture's top edge, inside the picture.
      const above = y0 >= 18;
      const tag = svgEl('text', {
        class: 'ov-label',
        x: Math.max(3, Math.min(x0, w - 52)).toFixed(1),
        y: (above ? y0 - 6 : Math.min(y1 + 15, ht - 4)).toFixed(1),
      });
      tag.textContent = 'differs';
      children.push(
        svgEl('polygon', { class: 'ov-halo', points: part }),
        svgEl('polygon', { class: 'ov-differed', points: part }),
        tag);
    }
    svg.replaceChildren(...children);
    svg.setAttribute('aria-label', label);
    svg.dataset.state = 'shown';
    svg.removeAttribute('hidden');
  }

  /** (Re)draw both overlays for the match being compared, as the pictures are now shown. */
  function drawOverlays() {
    const m = compare.match;
    const p = m && m.parts;
    const q = $('#compare-query');
    const stored = $('#compare-stored');
    const querySvg = $('#compare-query-overlay');
    const storedSvg = $('#compare-stored-overlay');
    if (!p || !$('#compare').open) {
      clearOverlays();
      return;
    }
    const rect = p.differed ? rectCorners(p.differed.rect) : null;
    const turn = compare.shownAligned ? ALIGN[m.orientation] : null;
    const onListing = (points) => (turn ? points.map((pt) => turnShare(pt, turn)) : points);
    const listingPart = rect && finitePoints(p.listing_quad) ? rect.map(([s, t]) => bilinear(p.listing_quad, s, t)) : null;
    const differs = rect ? '; dashed: the part that differs (another logo?)' : '';
    drawOverlay(querySvg, q, finitePoints(p.listing_quad) ? onListing(p.listing_quad) : null,
      listingPart && onListing(listingPart), `Outline of the catalog photo on the listing${differs}`);
    querySvg.dataset.aligned = String(!!turn);
    drawOverlay(storedSvg, stored, p.stored_quad, rect, `Outline of the listing on the catalog photo${differs}`);
  }

  /** The key under the pictures: what the outlines mean, for this match. */
  function fillLegend(m) {
    const p = m.parts;
    const legend = $('#compare-legend');
    if (!p) {
      fill(legend, h('li', { class: 'muted' },
        'No outline: this match was not compared part by part (no geometric fit between the two pictures).'));
    } else {
      const past = finitePoints(p.listing_quad)
        && p.listing_quad.some(([x, y]) => x < -0.01 || y < -0.01 || x > 1.01 || y > 1.01);
      fill(legend,
        h('li', { class: 'legend-match' }, h('span', { class: 'ov-swatch ov-swatch-match', 'aria-hidden': 'true' }),
          h('span', {}, h('strong', {}, 'Matched region'), ' — where the pictures line up: the catalog photo’s outline on the listing, the listing’s on the catalog photo. Shaded: not in the other picture.')),
        p.differed
          ? h('li', { class: 'legend-differed' }, h('span', { class: 'ov-swatch ov-swatch-differed', 'aria-hidden': 'true' }),
            h('span', {}, h('strong', {}, 'This part differs: another logo?'), ' Compare it by eye; a match like this goes to review, not flagged.'))
          : null,
        past ? h('li', { class: 'legend-crop muted' },
          'The catalog photo’s outline runs past the listing’s edges: the listing shows only part of it (a crop).') : null,
        h('li', { class: 'legend-aligned muted', hidden: !compare.aligned }, 'The listing is shown turned back; its outline is turned with it.'));
    }
    legend.hidden = false;
  }

  $('#compare-align').addEventListener('click', () => setAligned(!compare.aligned));
  $('#compare-query').addEventListener('load', (e) => {
    compare.shownAligned = e.target.dataset.aligned === 'true';
    drawOverlays();
  });
  $('#compare-stored').addEventListener('load', drawOverlays);
  // The pictures' boxes change with the window (and when the dialog opens): follow them.
  if (typeof ResizeObserver === 'function') {
    const resized = new ResizeObserver(() => drawOverlays());
    for (const frame of document.querySelectorAll('#compare .compare-frame')) resized.observe(frame);
  } else {
    window.addEventListener('resize', drawOverlays);
  }
  $('#compare').addEventListener('close', () => {
    if (check.alignedUrl) URL.revokeObjectURL(check.alignedUrl);
    check.alignedUrl = '';
  });
  $('#compare-close').addEventListener('click', () => $('#compare').close());
  $('#compare-done').addEventListener('click', () => $('#compare').close());
  $('#compare-entry').addEventListener('click', () => {
    const id = compare.match && compare.match.id;
    $('#compare').close();
    if (id != null) openEntry(id);
  });

  // Clicking the dimmed backdrop closes a dialog too (the dialog element itself is the target).
  for (const dlg of document.querySelectorAll('dialog.dialog')) {
    dlg.addEventListener('click', (e) => {
      if (e.target !== dlg) return;
      const r = dlg.getBoundingClientRect();
      const inside = e.clientX >= r.left && e.clientX <= r.right && e.clientY >= r.top && e.clientY <= r.bottom;
      if (!inside) dlg.close();
    });
  }

  // ---------- choosing, dropping and pasting ----------

  const fileInput = $('#file-input');
  $('#choose').addEventListener('click', () => fileInput.click());
  fileInput.addEventListener('change', () => {
    const file = fileInput.files && fileInput.files[0];
    if (file) useFile(file);
    fileInput.value = ''; // choosing the same file again still counts
  });

  function pickImage(files) {
    const list = Array.from(files || []);
    return list.find((f) => f.type.startsWith('image/')) || list[0] || null;
  }

  const drop = $('#drop');
  let dragDepth = 0;
  const dragHasFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types || []).includes('Files');

  window.addEventListener('dragenter', (e) => {
    if (!e.dataTransfer) return;
    dragDepth += 1;
    drop.classList.add('is-dragging');
  });
  window.addEventListener('dragleave', () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) drop.classList.remove('is-dragging');
  });
  window.addEventListener('dragover', (e) => {
    if (!e.dataTransfer) return;
    e.preventDefault(); // allow dropping anywhere, instead of the browser opening the file
    e.dataTransfer.dropEffect = 'copy';
  });
  window.addEventListener('drop', (e) => {
    if (!e.dataTransfer) return;
    e.preventDefault();
    dragDepth = 0;
    drop.classList.remove('is-dragging');
    const file = dragHasFiles(e) ? pickImage(e.dataTransfer.files) : null;
    if (file) {
      if (e.dataTransfer.files.length > 1) toast(`Checking one file at a time: ${fileLabel(file)}.`);
      useFile(file);
    } else {
      toast('Drop the image file itself. For an image on a web page, save it first — or copy it and paste it here.');
    }
  });

  const isTextField = (el) => el && (el.isContentEditable || (el.matches && el.matches('input:not([type=checkbox]):not([type=file]), textarea, select')));

  document.addEventListener('paste', (e) => {
    const items = Array.from((e.clipboardData && e.clipboardData.items) || []);
    const item = items.find((i) => i.kind === 'file' && i.type.startsWith('image/'));
    if (!item) {
      if (!isTextField(e.target)) toast('The clipboard holds no image. Copy an image (not its address), then paste.');
      return;
    }
    const file = item.getAsFile();
    if (!file) return;
    e.preventDefault();
    useFile(file);
  });

  for (const id of ['#label-filter', '#k', '#nearest']) $(id).addEventListener('change', () => runMatch());
  $('#brand-filter').addEventListener('change', () => runMatch());
  $('#filters').addEventListener('submit', (e) => {
    e.preventDefault();
    runMatch();
  });

  // ---------- catalog ----------

  const catalog = { brands: null, brand: '', label: '', offset: 0, limit: 24, seq: 0, brandsSeq: 0 };

  function updateSummary(data) {
    const brands = data.brands.length;
    // Keys limited to some brands get no catalog-wide totals (live / deleted are null).
    const live = data.live ?? data.brands.reduce((n, b) => n + (b.authentic || 0) + (b.known_fake || 0), 0);
    $('#catalog-summary').textContent = `${plural(live, 'photo', 'photos')} · ${plural(brands, 'brand', 'brands')}`;
    $('#catalog-summary').title = '';
    $('#catalog-totals').textContent = `${plural(live, 'live photo', 'live photos')} from ${plural(brands, 'brand', 'brands')}${data.deleted ? `, ${plural(data.deleted, 'deleted', 'deleted')}` : ''}`;
    $('#brand-options').replaceChildren(...data.brands.map((b) => h('option', { value: b.brand })));
  }

  async function loadBrands() {
    const seq = ++catalog.brandsSeq;
    try {
      const data = await api('GET', '/api/brands');
      if (seq !== catalog.brandsSeq) return;
      catalog.brands = data;
      updateSummary(data);
      renderBrands();
      clearError($('#catalog-error'));
    } catch (err) {
      if (seq !== catalog.brandsSeq) return;
      $('#catalog-summary').textContent = err.status === 401 ? 'API key needed' : err.status === 403 ? 'No catalog access' : 'Catalog unavailable';
      $('#catalog-summary').title = `${err.status ? `HTTP ${err.status}: ` : ''}${err.message}`;
      if (currentView === 'catalog') showError($('#catalog-error'), err, 'Reading the catalog', { onRetry: route });
    }
  }

  function renderBrands() {
    const data = catalog.brands;
    if (!data) return;
    const filter = $('#brand-search').value.trim().toLowerCase();
    const rows = data.brands
      .filter((b) => !filter || b.brand.toLowerCase().includes(filter))
      .map((b) => {
        const count = (label, n, text) => h('button', {
          type: 'button',
          class: `count${n ? '' : ' is-zero'}${catalog.brand === b.brand && catalog.label === label ? ' is-current' : ''}`,
          dataset: { brand: b.brand, label },
          'aria-label': `${b.brand}: ${plural(n, text, `${text}s`)}`,
          onclick: () => goCatalog(b.brand, label, 0),
        }, n.toLocaleString());
        const total = (b.authentic || 0) + (b.known_fake || 0);
        return h('tr', { class: `brand-row${catalog.brand === b.brand ? ' is-current' : ''}`, dataset: { brand: b.brand } },
          h('th', { scope: 'row' }, h('button', {
            type: 'button', class: 'brand-link', dataset: { brand: b.brand, label: '' },
            'aria-label': `${b.brand}: all ${plural(total, 'photo', 'photos')}`,
            onclick: () => goCatalog(b.brand, '', 0),
          }, b.brand)),
          h('td', { class: 'num' }, count('authentic', b.authentic || 0, 'authentic photo')),
          h('td', { class: 'num' }, count('known_fake', b.known_fake || 0, 'known fake')));
      });
    $('#brands tbody').replaceChildren(...rows);
    $('#brands-empty').hidden = data.brands.length > 0;
  }

  $('#brand-search').addEventListener('input', renderBrands);

  for (const btn of document.querySelectorAll('#label-tabs button')) {
    btn.addEventListener('click', () => goCatalog(catalog.brand, btn.dataset.label, 0));
  }

  async function loadEntries() {
    const seq = ++catalog.seq;
    const panel = $('#entries-panel');
    panel.dataset.state = 'loading';
    const who = catalog.brand || 'All brands';
    const what = catalog.label ? `${LABELS[catalog.label].text} photos` : 'all photos';
    $('#entries-title').textContent = `${who} · ${what}`;
    for (const btn of document.querySelectorAll('#label-tabs button')) {
      btn.setAttribute('aria-pressed', String(btn.dataset.label === catalog.label));
    }
    const p = new URLSearchParams({ offset: String(catalog.offset), limit: String(catalog.limit) });
    if (catalog.brand) p.set('brand', catalog.brand);
    if (catalog.label) p.set('label', catalog.label);
    try {
      const data = await api('GET', `/api/entries?${p}`);
      if (seq !== catalog.seq) return;
      if (!data.entries.length && data.total > 0 && catalog.offset > 0) {
        // Past the end (entries were deleted): go to the last page.
        const last = Math.floor((data.total - 1) / catalog.limit) * catalog.limit;
        goCatalog(catalog.brand, catalog.label, last);
        return;
      }
      renderEntries(data);
      clearError($('#catalog-error'));
      panel.dataset.state = 'done';
    } catch (err) {
      if (seq !== catalog.seq) return;
      $('#entries').replaceChildren();
      $('#entries-empty').hidden = true;
      $('#pager').hidden = true;
      showError($('#catalog-error'), err, 'Listing catalog photos', { onRetry: loadEntries });
      panel.dataset.state = 'error';
    }
    renderBrands();
  }

  function renderEntries(data) {
    const cards = data.entries.map((e) => h('li', {},
      h('button', {
        type: 'button',
        class: 'entry-card',
        dataset: { id: e.id, label: e.label, externalId: e.external_id },
        'aria-label': `${e.brand} / ${e.external_id}, ${LABELS[e.label] ? LABELS[e.label].text : e.label}`,
        onclick: () => openEntry(e.id),
      },
      h('span', { class: 'thumb-frame' },
        thumbImg(e.thumbnail, 'entry-thumb', { loading: 'lazy' }),
        h('span', { class: 'thumb-missing' }, icon('image'), 'No thumbnail')),
      h('span', { class: 'entry-meta' },
        h('span', { class: 'entry-ext', title: e.external_id }, e.external_id),
        h('span', { class: 'entry-line' }, labelBadge(e.label), catalog.brand ? null : h('span', { class: 'entry-brand' }, e.brand))))));
    $('#entries').replaceChildren(...cards);
    $('#entries-empty').hidden = data.entries.length > 0;
    const from = data.entries.length ? data.offset + 1 : 0;
    const to = data.offset + data.entries.length;
    $('#pager-info').textContent = data.total ? `${from.toLocaleString()}–${to.toLocaleString()} of ${data.total.toLocaleString()}` : '';
    $('#pager-prev').disabled = data.offset === 0;
    $('#pager-next').disabled = to >= data.total;
    $('#pager').hidden = data.total <= catalog.limit && data.offset === 0;
  }

  $('#pager-prev').addEventListener('click', () => goCatalog(catalog.brand, catalog.label, Math.max(0, catalog.offset - catalog.limit)));
  $('#pager-next').addEventListener('click', () => goCatalog(catalog.brand, catalog.label, catalog.offset + catalog.limit));

  // ---------- one entry, and deleting it ----------

  const entryState = { entry: null };

  async function openEntry(id) {
    let e;
    try {
      e = await api('GET', `/api/entries/${encodeURIComponent(id)}`);
    } catch (err) {
      const box = currentView === 'catalog' ? $('#catalog-error') : $('#error');
      showError(box, err, 'Opening the catalog entry', { notFound: `No catalog entry #${id}` });
      return;
    }
    entryState.entry = e;
    const dlg = $('#entry-dialog');
    clearError($('#entry-error'));
    $('#entry-title').textContent = `${e.brand} / ${e.external_id}`;
    fill($('#entry-sub'), LABELS[e.label] ? LABELS[e.label].long : e.label,
      e.deleted_at_ms != null ? h('span', { class: 'badge badge-deleted' }, 'Deleted') : null);
    const thumb = $('#entry-thumb');
    thumb.alt = `Thumbnail of ${e.brand} / ${e.external_id}`;
    setImage(thumb, e.thumbnail);
    fill($('#entry-facts'),
      kv('Label', labelBadge(e.label)),
      kv('Brand', e.brand),
      kv('External id', h('code', {}, e.external_id)),
      kv('Note', e.note || h('span', { class: 'muted' }, 'none')),
      kv('Source', e.source ? h('code', { class: 'wrap' }, e.source) : h('span', { class: 'muted' }, 'unknown')),
      kv('Added', formatDate(e.added_at_ms)),
      e.deleted_at_ms != null ? kv('Deleted', formatDate(e.deleted_at_ms)) : null,
      kv('Quality (PDQ)', e.quality == null ? '—' : `${e.quality} / 100`),
      kv('PDQ hash', h('code', { class: 'hash' }, e.pdq)),
      kv('Entry', h('code', {}, `#${e.id}`)));
    const del = $('#entry-delete');
    del.disabled = e.deleted_at_ms != null;
    del.title = del.disabled ? 'Already deleted' : '';
    if (!dlg.open) dlg.showModal();
    $('#entry-close').focus();
  }

  /** Ask before something that cannot be undone here; resolves true on confirm. */
  function confirmAction(title, text, okText) {
    const dlg = $('#confirm-dialog');
    $('#confirm-title').textContent = title;
    $('#confirm-text').textContent = text;
    $('#confirm-ok').textContent = okText;
    dlg.returnValue = '';
    return new Promise((resolve) => {
      dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), { once: true });
      dlg.showModal();
      $('#confirm-cancel').focus();
    });
  }

  async function deleteEntry() {
    const e = entryState.entry;
    if (!e) return;
    const ok = await confirmAction(
      `Delete ${e.brand} / ${e.external_id}?`,
      `Listings will no longer be matched against this ${e.label === 'known_fake' ? 'known fake' : 'authentic photo'}. This cannot be undone from this page.`,
      'Delete photo');
    if (!ok) return;
    const del = $('#entry-delete');
    del.disabled = true;
    try {
      await api('DELETE', `/api/entries/${encodeURIComponent(e.id)}`);
    } catch (err) {
      del.disabled = false;
      showError($('#entry-error'), err, 'Deleting catalog photos', { notFound: 'Already deleted' });
      return;
    }
    $('#entry-dialog').close();
    toast(`Deleted ${e.brand} / ${e.external_id} from the catalog.`);
    // Refresh what is on screen: the catalog, or the listing's matches (it may have been one).
    await Promise.all([loadBrands(), currentView === 'catalog' ? loadEntries() : runMatch()]);
  }

  $('#entry-delete').addEventListener('click', deleteEntry);
  $('#entry-close').addEventListener('click', () => $('#entry-dialog').close());
  $('#entry-done').addEventListener('click', () => $('#entry-dialog').close());

  // ---------- start ----------

  window.addEventListener('hashchange', route);
  showKeyState();
  route();
  if (currentView !== 'catalog') loadBrands();
})();

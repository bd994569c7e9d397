// The in-page reader of simpersona/agent/page_reading.py (EXTRACT_JS): every visible
// interactive element in document order (ids stable across reads: the element's id, else a
// `data-sp-agent-id` given here), the structured data, the header's cart texts, and what the
// first matching site profile points at. One page.evaluate call per observation.
async ({maxText, profiles, styleWaitMs}) => {
  // Labels are innerText and visibility is computed style, so both change when a stylesheet
  // applies (`text-transform`, `display: none`). A page is read at DOMContentLoaded, which
  // does not wait for stylesheets: wait for those still loading (load or error), bounded, and
  // not at all once the document has loaded (its load event waits for every stylesheet).
  if (document.readyState !== 'complete') {
    const waited = (window.__spStylesWaited ||= new WeakSet());  // a failed sheet: once a page
    const pending = [...document.querySelectorAll('link[rel~="stylesheet"]')]
      .filter(l => !l.sheet && !l.disabled && !waited.has(l));
    if (pending.length) {
      await new Promise((resolve) => {
        let left = pending.length;
        const one = () => { if (--left <= 0) resolve(); };
        for (const l of pending) {
          waited.add(l);
          l.addEventListener('load', one, {once: true});
          l.addEventListener('error', one, {once: true});
        }
        window.addEventListener('load', resolve, {once: true});
        setTimeout(resolve, styleWaitMs || 0);
      });
    }
  }
  const body = document.body;
  if (!body) return {empty: true, url: location.href, title: document.title};
  const vh = window.innerHeight, sy = window.scrollY;
  const clean = (t) => (t || '').replace(/\s+/g, ' ').trim();
  const meta = (n) => { const m = document.querySelector(`meta[name="${n}"], meta[property="${n}"]`);
                        return m ? m.getAttribute('content') : null; };
  const generator = meta('generator');
  const host = location.hostname.toLowerCase();
  let prof = null;
  for (const p of profiles || []) {
    if ((p.hosts || []).some(h => host === h || host.endsWith('.' + h))
        || (p.generator && p.generator === generator)) { prof = p; break; }
  }
  const visible = (el) => {
    if (el.type === 'hidden' || el.hidden || el.disabled && el.tagName !== 'OPTION') return false;
    if (el.getAttribute('aria-disabled') === 'true' && el.getAttribute('role')) return false;
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0 && el.type !== 'radio' && el.type !== 'checkbox') return false;
    const s = getComputedStyle(el);
    return s.visibility !== 'hidden' && s.display !== 'none';
  };
  // A profile that says everything (guess: false, our storefront) reads labels as it always
  // has; other pages also try the label around a control, aria-labelledby and an image's alt.
  const guess = !prof || prof.guess !== false;
  const labelOf = (el) => {
    let t = '';
    if (el.id) { const l = document.querySelector(`label[for="${CSS.escape(el.id)}"]`); if (l) t = l.innerText; }
    if (guess && !t && el.closest('label') && (el.tagName === 'INPUT' || el.getAttribute('role'))) t = el.closest('label').innerText;
    if (guess && !t && el.getAttribute('aria-labelledby')) { const l = document.getElementById(el.getAttribute('aria-labelledby')); if (l) t = l.innerText; }
    if (!t) t = el.getAttribute('aria-label') || '';
    if (!t && (el.tagName === 'A' || el.tagName === 'BUTTON')) t = el.innerText;
    if (guess && !t && el.tagName === 'A') { const img = el.querySelector('img[alt]'); if (img) t = img.alt; }
    if (!t) t = guess ? (el.getAttribute('placeholder') || el.getAttribute('title') || el.value || el.getAttribute('name') || '')
                      : (el.getAttribute('placeholder') || el.getAttribute('name') || el.getAttribute('title') || el.value || '');
    return clean(t);
  };
  // The row, card or list item a control sits in: the smallest ancestor with more text than
  // the control itself (at most 6 levels up, at most 160 characters).
  const contextOf = (el, label) => {
    let a = el.parentElement;
    for (let i = 0; a && a !== body && i < 6; i++, a = a.parentElement) {
      const t = clean(a.innerText);
      if (t.length > label.length + 2) return t.length <= 160 ? t : t.slice(0, 160);
    }
    return '';
  };
  const CARD = /(^|[\s_-])(product|item|card|pod|tile)([\s_-]|$)|product[-_]?(card|item|pod|tile|box)/i;
  const cardOf = (el) => {
    let a = el.parentElement;
    for (let i = 0; a && a !== body && i < 6; i++, a = a.parentElement) {
      const it = a.getAttribute('itemtype') || '';
      const cls = typeof a.className === 'string' ? a.className : '';
      // The card is the container that also holds the product's link (not its price box).
      if ((/Product/i.test(it) || CARD.test(cls)) && a.tagName !== 'FORM' && a.querySelector('a[href]')) return a;
    }
    return null;
  };
  const attrOf = (el, name) => {
    if (!name) return null;
    const x = el.getAttribute(name) ? el : el.closest(`[${name}]:not(body)`);
    return x ? x.getAttribute(name) : null;
  };
  const els = [];
  // Agent ids continue where the last read of this document stopped: an element that
  // appeared since (a cart drawer) must not take an id an earlier element holds.
  let n = window.__spAgentNext || 0;
  const seen = new Set();
  const WIDGETS = 'a[href], button, input, select, textarea, [role=button], [role=option], [role=radio], [role=checkbox], [role=combobox], [role=menuitem]';
  for (const el of document.querySelectorAll(WIDGETS)) {
    if (!visible(el)) continue;
    // An ARIA widget inside a native control (a span[role=radio] in a button) is that control.
    if (el.getAttribute('role') && el.parentElement && el.parentElement.closest('button, a[href]') && !['option'].includes(el.getAttribute('role'))) continue;
    let id = el.id;
    if (!id || seen.has(id)) {
      id = el.getAttribute('data-sp-agent-id');
      if (!id) { id = 'sp-' + (n++); el.setAttribute('data-sp-agent-id', id); }
    }
    seen.add(id);
    const tag = el.tagName.toLowerCase();
    const type = (el.getAttribute('type') || '').toLowerCase();
    const aria = (el.getAttribute('role') || '').toLowerCase();
    let kind = tag === 'a' ? 'link' : tag === 'select' ? 'select' : tag === 'textarea' ? 'input'
      : tag === 'input' ? (['submit', 'button', 'image', 'reset'].includes(type) ? 'button'
        : ['radio', 'checkbox'].includes(type) ? type : 'input')
      : ['radio', 'checkbox'].includes(aria) ? aria : 'button';
    const r = el.getBoundingClientRect();
    const label = labelOf(el).slice(0, 120);
    const e = {id, kind, label, top: r.top + sy, in_view: r.bottom > 0 && r.top < vh};
    if (kind === 'input') { e.value = (el.value || '').slice(0, 60); e.input_type = type || 'text'; }
    if (kind === 'radio' || kind === 'checkbox') {
      const rg = el.closest('[role=radiogroup], fieldset');
      e.checked = tag === 'input' ? el.checked : el.getAttribute('aria-checked') === 'true';
      e.group = el.getAttribute('name') || (rg && (rg.id || rg.getAttribute('aria-label'))) || null;
      if (!e.group && rg) { if (!rg.dataset.spGroup) rg.dataset.spGroup = 'rg-' + (n++); e.group = rg.dataset.spGroup; }
    }
    if (aria) e.aria_role = aria;
    if (aria === 'combobox') e.text = clean(el.innerText).slice(0, 60);
    if (kind === 'select') {
      e.value = el.value;
      e.options = Array.from(el.options).slice(0, 40).map(o => o.value === clean(o.text) ? o.value : `${o.value}=${clean(o.text)}`);
    }
    if (tag === 'a') e.href = el.href.slice(0, 300);
    const name = el.getAttribute('name'); if (name) e.name = name.slice(0, 60);
    const ac = el.getAttribute('autocomplete'); if (ac) e.autocomplete = ac;
    if (el.required) e.required = true;
    if (el.form) {
      // getAttribute, not el.form.action: a field named "action" (or "id") shadows those.
      const f = el.form, act = f.getAttribute('action');
      try { e.form_action = new URL(act || location.href, location.href).href.slice(0, 300); } catch (err) {}
      e.form_method = (f.getAttribute('method') || 'get').toLowerCase();
      e.form_hint = clean([f.getAttribute('id'), f.getAttribute('class'), f.getAttribute('name')].join(' ')).slice(0, 120);
    }
    const own = typeof el.className === 'string' ? el.className : '';
    e.hint = clean([el.id, own, name, el.getAttribute('data-action'), el.getAttribute('value') && kind === 'button' ? el.value : ''].join(' ')).slice(0, 120);
    if (guess && kind !== 'link' && kind !== 'input' && kind !== 'select') e.context = contextOf(el, label);
    const card = guess ? cardOf(el) : null;
    if (card) {
      e.in_card = true;
      // The card's product: its first link (a listing's add-to-cart button acts on it).
      const a = card.querySelector('a[href]');
      if (a && kind !== 'link') e.card_href = a.href.slice(0, 300);
    }
    if (prof) {
      const pid = attrOf(el, prof.product_attr);
      if (pid && (kind === 'link' || kind === 'button')) e.product_id = pid;
      const cid = prof.collection_attr && el.getAttribute(prof.collection_attr);
      if (cid) e.collection_id = cid;
    }
    // The outermost landmark decides: footer links sit in a <nav> inside <footer>.
    e.region = el.closest('footer') ? 'footer' : el.closest('header') ? 'header'
      : el.closest('form') ? 'form' : el.closest('nav') ? 'nav' : 'main';
    els.push(e);
  }
  window.__spAgentNext = n;
  const main = document.querySelector('main') || body;
  const q = (sel) => { try { return document.querySelector(sel); } catch (e) { return null; } };
  const txt = (sel) => { const x = q(sel); return x ? clean(x.innerText) : null; };
  const read = (spec) => { const x = q(spec.selector); if (!x) return null;
                           return spec.attribute ? x.getAttribute(spec.attribute) : clean(x.innerText); };
  const ld = [], og = {}, micro = [], cartTexts = [];
  // What the conventions read (a profile that says everything skips it).
  if (guess) {
  for (const s of document.querySelectorAll('script[type="application/ld+json"]')) {
    try { ld.push(JSON.parse(s.textContent)); } catch (err) {}
  }
  for (const m of document.querySelectorAll('meta[property^="og:"], meta[property^="product:"]')) {
    og[m.getAttribute('property')] = m.getAttribute('content');
  }
  for (const it of document.querySelectorAll('[itemscope][itemtype*="Product" i]')) {
    const prop = (p) => { const x = it.querySelector(`[itemprop="${p}"]`); if (!x) return null;
      return x.getAttribute('content') || (x.tagName === 'A' || x.tagName === 'LINK' ? x.getAttribute('href') : null) || clean(x.innerText) || null; };
    micro.push({name: prop('name'), sku: prop('sku') || prop('productID') || prop('mpn'),
                price: prop('price'), currency: prop('priceCurrency'),
                has_form: !!it.querySelector('form button, form input[type=submit]'), in_link: !!it.closest('a')});
    if (micro.length >= 60) break;
  }
  // Short texts of the header's cart/basket/bag elements: where stores show the item count.
  for (const x of document.querySelectorAll('[class*="cart" i], [id*="cart" i], [class*="basket" i], [id*="basket" i], [class*="bag" i], [aria-label*="cart" i], [aria-label*="basket" i], [data-cart-count]')) {
    if (!x.closest('header, nav, [role=banner]') && !/count|qty|quantity|badge/i.test(x.className + ' ' + x.id)) continue;
    const t = clean(x.getAttribute('data-cart-count') || x.innerText || x.getAttribute('aria-label'));
    if (t && t.length <= 60) cartTexts.push(t);
    if (cartTexts.length >= 12) break;
  }
  }
  const errorBox = (prof && prof.form_error && txt(prof.form_error)) || txt('[role=alert]')
    || (guess ? (txt('.errorlist') || txt('.alert-danger') || txt('.alert-error')
                 || txt('.woocommerce-error') || txt('.field-error') || txt('.error-message')) : null);
  const notice = guess ? (txt('.alert-success') || txt('.woocommerce-message') || txt('[role=status]')) : null;
  const out = {
    url: location.href,
    title: document.title,
    generator,
    profile: prof ? prof.name : null,
    guess,
    heading: txt('h1'),
    form_error: errorBox,
    text: clean(main.innerText).slice(0, maxText),
    scroll_y: sy, viewport_h: vh, page_h: document.documentElement.scrollHeight,
    payment_fields: !!q('input[autocomplete^="cc-"], input[name*="card" i], #card-number'),
    ld, og, micro, cart_texts: cartTexts, notice,
    elements: els,
  };
  if (prof) {
    const ka = prof.kind_attr && q(prof.kind_attr.selector);
    out.page = (ka && ka.getAttribute(prof.kind_attr.name)) || (prof.kind_meta ? meta(prof.kind_meta) : null);
    for (const [k, spec] of Object.entries(prof.facts || {})) { const v = read(spec); if (v) out[k === 'status' ? 'error_status' : k] = v; }
  }
  return out;
}

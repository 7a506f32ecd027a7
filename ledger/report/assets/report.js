
(function () {
  var errors = [];
  window.addEventListener('error', function (ev) {
    var t = ev.target;
    if (t && t !== window && t.tagName) {
      var what = t.tagName.toLowerCase() + ' ' + (t.getAttribute('src') || '');
      errors.push('failed to load ' + what);
    } else {
      errors.push(String(ev.message || 'error'));
    }
  }, true);
  window.addEventListener('load', function () {
    var imgs = Array.prototype.slice.call(document.images);
    var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
    bad.forEach(function (i) { i.classList.add('broken'); });
    var b = document.body.dataset;
    b.images = String(imgs.length);
    b.imagesOk = bad.length === 0 ? 'true' : 'false';
    b.imagesBroken = bad.map(function (i) { return i.getAttribute('src'); }).join(' ');
    b.errors = errors.join(' | ');
    b.ready = 'true';
  });
})();

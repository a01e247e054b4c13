// MathJax 3 configuration for pymdownx.arithmatex in generic mode: arithmatex wraps inline math in
// \( ... \) and display math in \[ ... \] inside elements of class "arithmatex"; only those are typeset.
// The MathJax library itself (assets/mathjax/tex-mml-chtml.js) is copied into the site by
// scripts/build_docs.sh from the npm `mathjax` package; nothing is loaded from a CDN.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};

// Material for MkDocs exposes `document$`, which emits on every page load (also with instant navigation):
// typeset the new page then. Without it (e.g. the theme changed), MathJax typesets once at start-up.
if (typeof document$ !== "undefined") {
  document$.subscribe(() => {
    if (window.MathJax && window.MathJax.typesetPromise && window.MathJax.startup.output) {
      MathJax.startup.output.clearCache();
      MathJax.typesetClear();
      MathJax.texReset();
      MathJax.typesetPromise();
    }
  });
}

#!/usr/bin/env bash
# Build the documentation site into site/ (or into the folder given as $1).
#
# Needs: the docs tools (pip install -e '.[docs]', part of '.[dev]') and, the first time only, npm (Debian: apt-get
# install npm) to fetch MathJax. The built site works served (python -m http.server -d site) and opened from disk
# (site/index.html): pages are plain files (use_directory_urls: false in mkdocs.yml).
#
#   1. Fetch MathJax 3 from the npm registry into build/mathjax/ unless it is already there (offline-safe: with
#      build/mathjax/ present, nothing touches the network). build/ is git-ignored; MathJax is never committed.
#   2. mkdocs build --strict (no CDN, no external inventories: mkdocs itself needs no network).
#   3. Copy MathJax's es5 bundle into <site>/assets/mathjax/, where mkdocs.yml's extra_javascript points.
#
# Environment: MATHJAX_VERSION (default 3.2.2), MATHJAX_DIR (default build/mathjax).
set -euo pipefail
cd "$(dirname "$0")/.."

SITE_DIR="${1:-site}"
MATHJAX_VERSION="${MATHJAX_VERSION:-3.2.2}"
MATHJAX_DIR="${MATHJAX_DIR:-build/mathjax}"
MATHJAX_ES5="$MATHJAX_DIR/node_modules/mathjax/es5"

# 1. MathJax, once.
if [ ! -f "$MATHJAX_ES5/tex-mml-chtml.js" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "error: MathJax is not in $MATHJAX_DIR and npm is not installed to fetch it" >&2
    exit 1
  fi
  echo "fetching mathjax@$MATHJAX_VERSION from the npm registry into $MATHJAX_DIR"
  mkdir -p "$MATHJAX_DIR"
  npm install --prefix "$MATHJAX_DIR" --no-save --no-package-lock --no-audit --no-fund --loglevel=error \
    "mathjax@$MATHJAX_VERSION"
  test -f "$MATHJAX_ES5/tex-mml-chtml.js"
fi

# 2. The site.
export NO_MKDOCS_2_WARNING=1
start=$(date +%s)
python -m mkdocs build --strict --site-dir "$SITE_DIR"
echo "mkdocs build --strict: $(( $(date +%s) - start )) s"

# 3. MathJax into the site: the whole es5 bundle (the loader fetches its fonts and any lazily loaded component
#    relative to its own location).
rm -rf "$SITE_DIR/assets/mathjax"
mkdir -p "$SITE_DIR/assets/mathjax"
cp -R "$MATHJAX_ES5/." "$SITE_DIR/assets/mathjax/"
echo "MathJax $(node -p "require('./$MATHJAX_DIR/node_modules/mathjax/package.json').version" 2>/dev/null || echo "$MATHJAX_VERSION") copied to $SITE_DIR/assets/mathjax/"
echo "site built in $SITE_DIR/"

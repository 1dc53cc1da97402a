#!/usr/bin/env bash
# Checks the demo's page in a real browser: headless Chromium (Debian's `chromium`: apt-get install
# chromium) screenshots index.html, and the page's HTML is checked for what a reader needs: its
# tables as <table> (no Markdown in <pre>), both plots, nothing wider than the window (no
# horizontal scrollbar: the page's own measure, printed by the browser into the DOM dump). Not
# part of `npm test`, which needs no browser.
#   bash scripts/check-demo-page.sh [demo-output folder, default demo-output] [screenshot.png]
# Run `npm run demo -- --scenario all` first (or point it at a folder the demo wrote).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="$(cd "${1:-$repo/demo-output}" && pwd)"
shot="${2:-$out/index.png}"
page="$out/index.html"
fail() { echo "check-demo-page: FAIL: $*" >&2; exit 1; }
[[ -f "$page" ]] || fail "no $page: run npm run demo -- --scenario all first"
browser="$(command -v chromium || command -v chromium-browser || true)"
[[ -n "$browser" ]] || fail "no chromium on PATH (apt-get update && apt-get install -y chromium)"

grep -q '<pre' "$page" && fail "the page still shows text in <pre>"
[[ "$(grep -c '<table>' "$page")" -ge 2 ]] || fail "the page has fewer than two <table>s"
grep -q '|---\||---:' "$page" && fail "Markdown table rules are left in the page"
grep -q '\*\*' "$page" && fail "Markdown bold markers (**) are left in the page"
for svg in mnist adaptivity; do
  [[ ! -f "$out/$svg.svg" ]] || grep -q "src=\"$svg.svg\"" "$page" || fail "the page does not show $svg.svg"
  # Every series has its own dash pattern: as many distinct stroke-dasharray values as series.
  if [[ -f "$out/$svg.svg" ]]; then
    dashes="$(grep -o 'stroke-dasharray="[^"]*"' "$out/$svg.svg" | sort -u | wc -l)"
    [[ "$dashes" -ge 4 ]] || fail "$svg.svg has $dashes distinct dash patterns"
    echo "check-demo-page: $svg.svg: $dashes distinct dash patterns"
  fi
done

profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking
  --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars)
# The page's width against the window's: a script in a copy of the page writes both into the DOM.
probe="$out/.check-demo-page.html"
sed 's#</html>#<script>addEventListener("load", () => { document.body.dataset.widths = document.documentElement.scrollWidth + "x" + innerWidth })</script>\n</html>#' "$page" >"$probe"
dom="$(timeout 120 "$browser" "${flags[@]}" --window-size=1280,900 --virtual-time-budget=5000 --dump-dom "file://$probe" 2>/dev/null)"
rm -f "$probe"
widths="$(grep -o 'data-widths="[0-9]*x[0-9]*"' <<<"$dom" | grep -o '[0-9]*x[0-9]*')" || fail "the browser did not load the page"
[[ "${widths%x*}" -le "${widths#*x}" ]] || fail "the page is ${widths%x*} px wide in a ${widths#*x} px window (a horizontal scrollbar)"
echo "check-demo-page: page width ${widths%x*} px in a ${widths#*x} px window"
timeout 120 "$browser" "${flags[@]}" --window-size=1280,4000 --screenshot="$shot" "file://$page" >/dev/null 2>&1
[[ -s "$shot" ]] || fail "no screenshot was written"
echo "check-demo-page: ok; screenshot in $shot (look at it)"

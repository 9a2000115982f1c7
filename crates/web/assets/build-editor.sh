#!/usr/bin/env bash
# Rebuilds the vendored editor bundle, vendor/codemirror.js, from the
# CodeMirror 6 packages pinned in editor/package-lock.json (npm registry).
# The bundle is committed, so building tradebox needs neither npm nor this
# script; run it only to change or update the editor.
#   crates/web/assets/build-editor.sh
set -euo pipefail
cd "$(dirname "$0")/editor"
npm ci --no-audit --no-fund
out=../vendor/codemirror.js
versions=$(node -e '
  const lock = require("./package-lock.json").packages;
  const names = Object.keys(lock).filter((k) => k.startsWith("node_modules/") && !lock[k].dev);
  console.log(names.map((k) => k.slice(13) + "@" + lock[k].version).sort().join(", "));
')
{
  printf '/* tradebox console editor: CodeMirror 6 with Python, bundled with esbuild\n'
  printf ' * from crates/web/assets/editor (editor.mjs, package-lock.json) by build-editor.sh.\n'
  printf ' * Packages: %s.\n' "$versions"
  printf ' * CodeMirror and Lezer: MIT License, Copyright (C) 2018-2021 by Marijn Haverbeke\n'
  printf ' * <marijn@haverbeke.berlin> and others; crelt, style-mod, w3c-keyname: MIT, Marijn Haverbeke. */\n'
  npx esbuild editor.mjs --bundle --minify --format=iife --target=es2020 --legal-comments=none
} > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote crates/web/assets/$(basename "$(dirname "$out")")/$(basename "$out") ($(wc -c < "$out") bytes)"

#!/bin/sh
# Regenerates src/edge/webui.h (the edge's web UI as one C string) from src/edge/webui.html.
# No build step needs it: webui.h is committed, and tests/test_edge.c checks that the page the
# edge serves is webui.html byte for byte, so the two cannot drift apart unnoticed.
set -e
cd "$(dirname "$0")/.."
{
    echo '/* webui — the edge web UI (GET /), generated from src/edge/webui.html by tools/webui_h.sh:'
    echo ' * edit the HTML and rerun the script. One self-contained page: no external assets. */'
    echo '#ifndef NG_EDGE_WEBUI_H'
    echo '#define NG_EDGE_WEBUI_H'
    echo 'static const char EDGE_WEBUI_HTML[] ='
    sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/    "/' -e 's/$/\\n"/' src/edge/webui.html
    echo '    ;'
    echo '#endif'
} >src/edge/webui.h.tmp
mv src/edge/webui.h.tmp src/edge/webui.h

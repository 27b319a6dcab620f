#!/usr/bin/env bash
# Segment the slides of a GDC manifest, as gdc-client downloaded them.
#
#   gdc-client download -m gdc_manifest.txt -d gdc/          # gdc/<id>/<filename>
#   examples/gdc_manifest.sh gdc_manifest.txt gdc/ out/ [--md5] [SEGMENT OPTIONS...]
#   examples/gdc_manifest.sh gdc_manifest.txt gdc/ out/ --md5 --device cuda --batch-size 16
#
# The manifest is the GDC's TSV (columns id, filename, md5, size, state). Each slide is
# looked for as DIR/<id>/<filename> (then DIR/<filename>); a slide that is missing, whose
# size differs from the manifest (an interrupted download) or, with --md5, whose MD5
# differs, is named on stderr and left out. The others go to one `cerberus segment
# --manifest` run (the model is loaded once; finished slides are skipped, so the script
# simply runs again after a failure or more downloads), which goes on past slides that
# fail. Last, `cerberus status` summarises the cohort, the slides left out as pending.
# Exit status: that of `cerberus status` (0: every slide of the manifest is done), or
# segment's when it was interrupted (130, 143) or refused its options (2).
# CERBERUS names the command (default: cerberus on PATH).
set -uo pipefail

usage="usage: gdc_manifest.sh MANIFEST DOWNLOAD_DIR OUT_DIR [--md5] [SEGMENT OPTIONS...]"
[ $# -ge 3 ] || { echo "$usage" >&2; exit 2; }
MANIFEST=$1 DIR=$2 OUT=$3
shift 3
MD5=0
if [ "${1:-}" = --md5 ]; then MD5=1; shift; fi
CERBERUS=${CERBERUS:-cerberus}

[ -f "$MANIFEST" ] || { echo "error: $MANIFEST: manifest not found" >&2; exit 2; }
[ -d "$DIR" ] || { echo "error: $DIR: download folder not found" >&2; exit 2; }
DIR=$(cd "$DIR" && pwd)

# id, filename, md5, size of each row, by the header's column names (any order), joined by
# the unit separator so that empty fields keep their place.
if ! ROWS=$(awk -F'\t' 'NR == 1 {
    sub(/\r$/, ""); for (i = 1; i <= NF; i++) col[$i] = i
    if (!("id" in col) || !("filename" in col)) exit 3
    next }
  { sub(/\r$/, ""); if ($0 == "") next
    printf "%s\037%s\037%s\037%s\n", $col["id"], $col["filename"],
      ("md5" in col) ? $col["md5"] : "", ("size" in col) ? $col["size"] : "" }' "$MANIFEST"); then
  echo "error: $MANIFEST: not a GDC manifest (no id and filename columns in its header)" >&2
  exit 2
fi

LIST=$(mktemp "${TMPDIR:-/tmp}/cerberus-gdc.XXXXXX.csv")
trap 'rm -f "$LIST"' EXIT
echo "path" > "$LIST"
listed=0 ready=0
while IFS=$'\037' read -r id name md5 size; do
  [ -n "$id$name" ] || continue
  listed=$((listed + 1))
  slide="$DIR/$id/$name"
  [ -f "$slide" ] || slide="$DIR/$name"
  if [ ! -f "$slide" ]; then
    echo "missing: $id/$name (not downloaded)" >&2; continue
  fi
  if [ -n "$size" ] && [ "$(stat -c %s "$slide")" != "$size" ]; then
    echo "incomplete: $slide: $(stat -c %s "$slide") bytes, the manifest says $size" >&2; continue
  fi
  if [ "$MD5" = 1 ]; then
    if [ -z "$md5" ]; then
      echo "error: $MANIFEST: --md5 given but $id/$name has no md5" >&2; exit 2
    fi
    if [ "$(md5sum < "$slide" | cut -d' ' -f1)" != "$md5" ]; then
      echo "md5 mismatch: $slide (download it again)" >&2; continue
    fi
  fi
  printf '"%s"\n' "${slide//\"/\"\"}" >> "$LIST"
  ready=$((ready + 1))
done <<< "$ROWS"
echo "$ready of $listed slides in $MANIFEST are ready" >&2

if [ "$ready" -gt 0 ]; then
  "$CERBERUS" segment --manifest "$LIST" -o "$OUT" --status "$@"
  rc=$?
  case $rc in
    0|1) ;;                      # 1: some slides failed; status names them
    *) exit "$rc" ;;             # 2: bad options; 130/143: interrupted or terminated
  esac
fi
"$CERBERUS" status "$OUT" --manifest "$MANIFEST" --slides-dir "$DIR"

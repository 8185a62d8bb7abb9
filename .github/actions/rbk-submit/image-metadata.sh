#!/bin/sh
# Image metadata from an OCI layout, with nothing but POSIX sh, grep and
# sed (the rbk image has no jq or python):
#   image-metadata.sh imageid LAYOUT_DIR|ARCHIVE.tar MANIFEST_DIGEST
#       the config digest the manifest names (docker's image id)
#   image-metadata.sh json DIGEST IMAGEID NAMES
#       BuildKit's metadata-file keys as one line of JSON
set -eu
case "$1" in
  imageid)
    src=$2 digest=$3
    blob="blobs/sha256/${digest#sha256:}"
    if [ -d "$src" ]; then manifest=$(cat "$src/$blob"); else manifest=$(tar -xOf "$src" "$blob"); fi
    printf '%s' "$manifest" | tr -d ' \n' | grep -o '"config":{[^}]*}' | grep -o 'sha256:[0-9a-f]\{64\}' | head -n 1
    ;;
  json)
    printf '{"containerimage.digest":"%s","containerimage.config.digest":"%s","image.name":"%s"}\n' "$2" "$3" "$4"
    ;;
  *)
    echo "usage: image-metadata.sh imageid LAYOUT DIGEST | json DIGEST IMAGEID NAMES" >&2
    exit 2
    ;;
esac

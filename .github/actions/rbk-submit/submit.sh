#!/usr/bin/env bash
# The action's rbk submit: builds the command line from INPUT_* variables,
# runs it, and writes the outputs (digest, imageid, metadata) and a job
# summary. RBK_COORDINATOR, RBK_TOKEN and RBK_CLIENT_DIR come from the
# environment, where rbk submit reads them. Also runs outside GitHub (tests):
# without GITHUB_OUTPUT / GITHUB_STEP_SUMMARY it prints the outputs.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Items of a newline- or comma-separated list, trimmed, empty ones dropped.
items() { tr ',\n' '\n\n' <<<"$1" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//' | grep -v '^$' || true; }
# Lines of a newline-separated list (values may hold commas: id=x,src=y).
lines() { sed 's/^[[:space:]]*//; s/[[:space:]]*$//' <<<"$1" | grep -v '^$' || true; }

args=(submit --progress "${INPUT_PROGRESS:-plain}")
[ -n "${INPUT_FILE:-}" ] && args+=(--file "$INPUT_FILE")
[ -n "${INPUT_TARGET:-}" ] && args+=(--target "$INPUT_TARGET")
[ -n "${INPUT_PLATFORM:-}" ] && args+=(--platform "$INPUT_PLATFORM")
[ -n "${INPUT_TLS_CA:-}" ] && args+=(--tls-ca "$INPUT_TLS_CA")
[ "${INPUT_NO_CACHE:-false}" = true ] && args+=(--no-cache)
[ "${INPUT_PUSH:-false}" = true ] && args+=(--push)
[ "${INPUT_LOAD:-false}" = true ] && args+=(--load)
tags=()
while IFS= read -r t; do tags+=("$t"); args+=(--tag "$t"); done < <(items "${INPUT_TAGS:-}")
while IFS= read -r a; do args+=(--build-arg "$a"); done < <(lines "${INPUT_BUILD_ARGS:-}")
while IFS= read -r s; do args+=(--secret "$s"); done < <(lines "${INPUT_SECRETS:-}")
while IFS= read -r s; do args+=(--ssh "$s"); done < <(lines "${INPUT_SSH:-}")
while IFS= read -r o; do args+=(--output "$o"); done < <(lines "${INPUT_OUTPUTS:-}")
while IFS= read -r r; do args+=(--insecure-registry "$r"); done < <(items "${INPUT_INSECURE_REGISTRIES:-}")
args+=("${INPUT_CONTEXT:-.}")

stdout=$(mktemp)
trap 'rm -f "$stdout"' EXIT
start=$(date +%s)
# rbk submit prints the manifest digest as its last line of stdout.
rbk "${args[@]}" | tee "$stdout"
seconds=$(( $(date +%s) - start ))
digest=$(grep -E '^sha256:[0-9a-f]{64}$' "$stdout" | tail -n 1 || true)
if [ -z "$digest" ]; then
  echo "rbk-submit: rbk submit printed no image digest" >&2
  exit 1
fi

# The image is assembled as an OCI layout under the client dir (out/);
# its manifest names the config, whose digest is docker's image id.
layout="${RBK_CLIENT_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rbk/client}/out"
imageid=$("$here/image-metadata.sh" imageid "$layout" "$digest" || true)
metadata=$("$here/image-metadata.sh" json "$digest" "$imageid" "$(IFS=,; echo "${tags[*]}")")

if [ -n "${GITHUB_OUTPUT:-}" ]; then
  { echo "digest=$digest"; echo "imageid=$imageid"; echo "metadata=$metadata"; } >> "$GITHUB_OUTPUT"
else
  printf 'digest=%s\nimageid=%s\nmetadata=%s\n' "$digest" "$imageid" "$metadata"
fi
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
  {
    echo "### rbk submit"
    echo
    echo "| | |"
    echo "|---|---|"
    echo "| coordinator | \`${RBK_COORDINATOR:-}\` |"
    echo "| tags | \`${tags[*]:-(none)}\` |"
    echo "| digest | \`$digest\` |"
    echo "| image id | \`${imageid:-unknown}\` |"
    echo "| pushed | ${INPUT_PUSH:-false} |"
    echo "| took | ${seconds} s |"
  } >> "$GITHUB_STEP_SUMMARY"
fi

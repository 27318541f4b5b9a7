#!/usr/bin/env bash
# Build the pinned Go programs the tests use into .tools/bin (git-ignored):
#   helm (Helm 4: lint and template the chart), prometheus + promtool (Prometheus 3: the
#   end-to-end test, rule checks), alertmanager + amtool, jaeger (Jaeger v2: the trace backend),
#   crane (go-containerregistry: the loopback OCI registry, `crane registry serve`, and reading
#   what was pushed to it), actionlint (the GitHub workflows); and two cargo plugins from
#   crates.io: cargo-auditable (the image's release build embeds its crate list) and
#   cargo-cyclonedx (the SBOMs, scripts/sbom.sh).
# Each program is built with `go install module/cmd/x@version`, so only the Go module proxy is
# needed; a program whose module has replace directives (Jaeger), which `go install pkg@version`
# refuses, is built from its own tools module, scripts/tools/NAME/go.mod (the pinned version and the
# same replace directives, go.sum committed). Alertmanager's web UI package embeds ui/app/dist,
# which its release process builds with npm and the module does not contain, so
# `go install .../cmd/alertmanager@v0.35.0` fails ("pattern app/dist: no matching files"):
# alertmanager is built from a copy of the module source (.tools/src) with placeholder pages
# there (the API, which the tests use, is unaffected; the web pages say the UI is not built). A stamp file per program (.tools/stamps/NAME) holds what it was built from (module,
# version, Go version, flags); a program whose stamp matches is not built again, so only the
# first run pays (see docs/development.md, "Tools the tests build", for the figures). Builds run under `nice -n 19`, one at a time.
#
# Built programs are also kept in a cache outside the work tree (MDE_TOOLS_CACHE, default
# ~/.cache/mde-liveresponse-exporter/tools, with their stamps), so a fresh clone on a machine
# that built them once (CI runs in a new clone) copies them instead of compiling again.
# TOOLS_BUDGET_SECONDS (default 900) bounds the compiling of one run (REQUIRED programs aside,
# below): a build still running when it is spent is stopped and the program reported as not built (exit 0; Go's build cache keeps
# what was compiled, so the next run goes on from there), and the callers use their fallbacks.
#
# Usage: scripts/tools.sh [NAME...]   (default: all; NAME is one of the names below)
#        scripts/tools.sh --list      print NAME VERSION for each pinned program
# Exit status: 0 when every asked-for program is built, 1 when any build failed (the others are
# still built; callers that have a fallback, like the e2e's Debian Prometheus, check the binary).
set -euo pipefail
cd "$(dirname "$0")/.."

# NAME MODULE VERSION PACKAGE [VERSION-VARIABLE=VALUE]
# The last field is what the projects' own release builds set with -X so that `--version` (and
# Prometheus's /api/v1/status/buildinfo) name the release; `go install` alone leaves it empty
# (Prometheus, Alertmanager) or without the patch (helm "v4.3"). Prometheus's module v0.316.0
# is Prometheus 3.16.0 (its VERSION file); Jaeger's module v1.75.0 is the v2.12.0 release.
# crane and actionlint print the module version from the build information without -X; they
# come right after helm, being small (seconds), so a spent budget never leaves them out.
# MODULE "crates.io" is a cargo plugin, built with `cargo install --locked` (its own Cargo.lock,
# so the same crates each time) into .tools/cargo and copied to .tools/bin: cargo-auditable
# (about 40 CPU-s) and cargo-cyclonedx (about 230 CPU-s), before the big Go programs for the
# same reason.
TOOLS=(
    "helm helm.sh/helm/v4 v4.3.2 helm.sh/helm/v4/cmd/helm helm.sh/helm/v4/internal/version.version=v4.3.2"
    "crane github.com/google/go-containerregistry v0.22.1 github.com/google/go-containerregistry/cmd/crane"
    "actionlint github.com/rhysd/actionlint v1.7.12 github.com/rhysd/actionlint/cmd/actionlint"
    "cargo-auditable crates.io 0.7.7 cargo-auditable"
    "cargo-cyclonedx crates.io 0.5.9 cargo-cyclonedx"
    "promtool github.com/prometheus/prometheus v0.316.0 github.com/prometheus/prometheus/cmd/promtool github.com/prometheus/common/version.Version=3.16.0"
    "prometheus github.com/prometheus/prometheus v0.316.0 github.com/prometheus/prometheus/cmd/prometheus github.com/prometheus/common/version.Version=3.16.0"
    "amtool github.com/prometheus/alertmanager v0.35.0 github.com/prometheus/alertmanager/cmd/amtool github.com/prometheus/common/version.Version=0.35.0"
    "alertmanager github.com/prometheus/alertmanager v0.35.0 github.com/prometheus/alertmanager/cmd/alertmanager github.com/prometheus/common/version.Version=0.35.0"
    "jaeger github.com/jaegertracing/jaeger v1.75.0 github.com/jaegertracing/jaeger/cmd/jaeger"
)
# The programs some step cannot do without (no fallback): helm (the chart checks), crane (the
# registry), actionlint (the workflows), the cargo plugins (the image and its SBOMs). They come
# first and TOOLS_BUDGET_SECONDS does not stop them; it bounds the others, whose steps fall back
# (Debian's Prometheus 2.42 and Alertmanager, the e2e's own OTLP receiver for Jaeger).
REQUIRED="helm crane actionlint cargo-auditable cargo-cyclonedx"
# -trimpath and -s -w: no local paths, no symbol tables (about a third smaller binaries).
# CGO_ENABLED=0: static binaries, no C toolchain needed.
LDFLAGS="-s -w"

root=$PWD/.tools
bin=$root/bin
stamps=$root/stamps
cache=${MDE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mde-liveresponse-exporter/tools}
deadline=$((SECONDS + ${TOOLS_BUDGET_SECONDS:-900}))

if [ "${1:-}" = --list ]; then
    for t in "${TOOLS[@]}"; do
        read -r name _ version _ <<<"$t"
        echo "$name $version"
    done
    exit 0
fi

mkdir -p "$bin" "$stamps"
# Go is needed for the Go programs only (the release workflow asks for the cargo plugins alone).
goversion=none
if command -v go >/dev/null; then
    goversion=$(go env GOVERSION)
fi

wanted=("$@")
is_wanted() {
    [ ${#wanted[@]} -eq 0 ] && return 0
    local w
    for w in "${wanted[@]}"; do [ "$w" = "$1" ] && return 0; done
    return 1
}
for w in "${wanted[@]}"; do
    printf '%s\n' "${TOOLS[@]}" | awk '{print $1}' | grep -qx "$w" \
        || { echo "tools.sh: unknown tool $w (scripts/tools.sh --list)" >&2; exit 2; }
done

# CPU seconds (user+sys) of all finished children so far, from the `times` builtin: the build's
# CPU cost, which unlike its wall time does not depend on what else the machine is doing.
# `times` runs in this shell (a $(...) subshell would report its own, empty, children).
child_cpu() {
    times >"$root/times"
    awk 'END { s = 0
        for (i = 1; i <= 2; i++) { n = split($i, p, "m"); s += p[1] * 60 + substr(p[2], 1, length(p[2]) - 1) }
        printf "%d\n", s }' "$root/times"
}

built=()
failed=()
skipped=()
total=0
for t in "${TOOLS[@]}"; do
    read -r name module version package xvar <<<"$t"
    is_wanted "$name" || continue
    ldflags="$LDFLAGS${xvar:+ -X $xvar}"
    stamp="$module@$version $package go=$goversion ldflags=$ldflags trimpath cgo=0"
    if [ "$module" = crates.io ]; then
        stamp="crates.io/$package@$version rustc=$(rustc -V | cut -d' ' -f2) locked"
    elif [ "$goversion" = none ]; then
        echo "tools.sh: go not found (Go 1.26 or newer is needed to build $name)" >&2
        failed+=("$name")
        continue
    fi
    tooldir=
    if [ -f "scripts/tools/$name/go.mod" ]; then
        tooldir=scripts/tools/$name
        grep -q "^require $module $version\$" "$tooldir/go.mod" \
            || { echo "tools.sh: $tooldir/go.mod does not require $module $version" >&2; failed+=("$name"); continue; }
        stamp="$stamp module=$(cat "$tooldir/go.mod" "$tooldir/go.sum" | sha256sum | cut -c1-16)"
    fi
    if [ -x "$bin/$name" ] && [ "$(cat "$stamps/$name" 2>/dev/null)" = "$stamp" ]; then
        echo "tools: $name $version up to date"
        continue
    fi
    if [ -x "$cache/bin/$name" ] && [ "$(cat "$cache/stamps/$name" 2>/dev/null)" = "$stamp" ]; then
        cp "$cache/bin/$name" "$bin/$name.tmp" && mv "$bin/$name.tmp" "$bin/$name"
        echo "$stamp" >"$stamps/$name"
        echo "tools: $name $version copied from $cache"
        continue
    fi
    left=$((deadline - SECONDS))
    # A program no step can do without is built whatever the budget says (an hour at most):
    # leaving it out would fail its step, not fall back.
    case " $REQUIRED " in *" $name "*) left=3600 ;; esac
    if [ "$left" -le 0 ]; then
        skipped+=("$name")
        echo "tools: $name $version not built: TOOLS_BUDGET_SECONDS is spent" >&2
        continue
    fi
    echo "== tools: building $name ($package@$version)"
    start=$(date +%s)
    child_cpu >"$root/cpu0"
    rm -f "$stamps/$name"
    if [ -n "$tooldir" ]; then
        target=(-C "$tooldir" install -trimpath -ldflags="$ldflags" "$package")
    elif [ "$name" = alertmanager ]; then
        src=$root/src/$(basename "$module")@$version
        if [ ! -f "$src/go.mod" ]; then
            dir=$(go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
            [ -n "$dir" ] || { echo "tools.sh: go mod download $module@$version failed" >&2; failed+=("$name"); continue; }
            rm -rf "$src" && mkdir -p "$(dirname "$src")" && cp -r "$dir" "$src" && chmod -R u+w "$src"
        fi
        for ui in elm mantine; do
            mkdir -p "$src/ui/app/dist/$ui"
            [ -f "$src/ui/app/dist/$ui/index.html" ] || echo "<p>Alertmanager $version built without its web UI (scripts/tools.sh); the API works.</p>" >"$src/ui/app/dist/$ui/index.html"
        done
        target=(-C "$src" install -trimpath -ldflags="$ldflags" "./${package#"$module"/}")
    else
        target=(install -trimpath -ldflags="$ldflags" "$package@$version")
    fi
    rc=0
    if [ "$module" = crates.io ]; then
        # Its own target folder (cargo install's temporary one), not the project's.
        timeout "$left" nice -n 19 env -u CARGO_TARGET_DIR cargo install --quiet --locked --force \
            --root "$root/cargo" --version "$version" "$package" || rc=$?
        [ "$rc" != 0 ] || cp "$root/cargo/bin/$name" "$bin/$name" || rc=$?
    else
        timeout "$left" nice -n 19 env GOBIN="$bin" CGO_ENABLED=0 GOFLAGS=-buildvcs=false go "${target[@]}" || rc=$?
    fi
    if [ "$rc" = 124 ]; then
        skipped+=("$name")
        echo "tools: $name $version not built: stopped after ${left}s, when TOOLS_BUDGET_SECONDS was spent (the next run goes on from Go's build cache)" >&2
        continue
    fi
    if [ "$rc" = 0 ]; then
        secs=$(($(date +%s) - start))
        child_cpu >"$root/cpu1"
        cpu=$(($(cat "$root/cpu1") - $(cat "$root/cpu0")))
        total=$((total + secs))
        echo "$stamp" >"$stamps/$name"
        mkdir -p "$cache/bin" "$cache/stamps" \
            && cp "$bin/$name" "$cache/bin/$name.tmp" && mv "$cache/bin/$name.tmp" "$cache/bin/$name" \
            && echo "$stamp" >"$cache/stamps/$name" || echo "tools: could not keep $name in $cache" >&2
        built+=("$name ${secs}s (${cpu} CPU-s) $(du -m "$bin/$name" | cut -f1)MB")
        echo "tools: $name $version built in ${secs}s wall, ${cpu}s CPU (user+sys), $(du -m "$bin/$name" | cut -f1) MB"
    else
        secs=$(($(date +%s) - start))
        total=$((total + secs))
        failed+=("$name")
        echo "tools: FAILED to build $name $version (after ${secs}s)" >&2
    fi
done

if [ ${#built[@]} -gt 0 ]; then
    echo "tools: built ${#built[@]} program(s) in ${total}s: $(IFS=,; echo "${built[*]}" | sed 's/,/, /g')"
    echo "tools: this is the first-run cost; later runs skip them (stamps in $stamps)"
fi
if [ ${#skipped[@]} -gt 0 ]; then
    echo "tools: not built within the budget: ${skipped[*]} (the steps that need them fall back or say so)" >&2
fi
if [ ${#failed[@]} -gt 0 ]; then
    echo "tools: failed: ${failed[*]}" >&2
    exit 1
fi

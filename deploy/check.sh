#!/usr/bin/env bash
# The deployment files checked as a cluster operator's tools would, offline (no cluster, no
# network once the tools are installed):
#   1. kubernetes-validate --strict: every manifest in deploy/kubernetes/ against the API schemas
#      of the Kubernetes versions below (bundled in the package); an unknown field fails.
#      The Prometheus Operator's kinds (ServiceMonitor, PrometheusRule) have no schema there:
#      deploy/checks/validate-custom.py checks them, just as strictly, against the schemas
#      vendored in deploy/checks/schemas/, and fails on any kind nobody has a schema for.
#   2. hadolint: the Dockerfile (ignored rules, each with its reason, in .hadolint.yaml).
#   3. checkov: the security posture of the manifests and the Dockerfile (accepted findings
#      are skipped inline, each with its reason, where they are; deploy/CHECKS.md lists them).
# The tools are pinned in deploy/checks/requirements.txt and installed on first use into a
# virtualenv in the user's cache, outside the checkout (reinstalled when that file changes):
# CI runs in a fresh clone, where a venv under target/ cost a 67 s reinstall every run.
# WORKFLOW_DLQ_TOOL_CACHE moves it. Run by .ci/run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The last three minor versions kubernetes-validate 1.37 bundles: an operator's cluster is
# usually one of them (the oldest still supported ones drop APIs the newest still serve).
k8s_versions=(1.35.0 1.36.0 1.37.0)
# The same cache the tests use (tests/it/common/mod.rs, tool_cache): without a home, the
# checkout's own target/.
if [[ -n ${WORKFLOW_DLQ_TOOL_CACHE:-} ]]; then cache=$WORKFLOW_DLQ_TOOL_CACHE
elif [[ -n ${XDG_CACHE_HOME:-} ]]; then cache=$XDG_CACHE_HOME/workflow-dlq
elif [[ -n ${HOME:-} ]]; then cache=$HOME/.cache/workflow-dlq
else cache=target
fi
venv=$cache/deploy-checks
requirements=deploy/checks/requirements.txt
manifests=(deploy/kubernetes/*.yaml)

started=$SECONDS
if ! cmp -s "$requirements" "$venv/installed-requirements.txt"; then
  echo "[deploy-check] installing $(grep -cE '^[a-z]' "$requirements") pinned tools into $venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-compile -r "$requirements"
  cp "$requirements" "$venv/installed-requirements.txt"
  echo "[deploy-check] installed in $((SECONDS - started))s"
fi
bin=$venv/bin
failed=()

for v in "${k8s_versions[@]}"; do
  echo "[deploy-check] kubernetes-validate --strict, Kubernetes $v"
  # --no-warn: the kinds it has no schema for are validate-custom.py's, which fails on any
  # kind that neither has a schema for.
  "$bin/kubernetes-validate" --strict --quiet --no-warn -k "$v" "${manifests[@]}" \
    || failed+=("kubernetes-validate $v")
  out=$("$bin/python" deploy/checks/validate-custom.py "$v" "${manifests[@]}") \
    || { grep -v '^OK\|^SKIP' <<<"$out"; failed+=("custom resources, Kubernetes $v"); }
done
echo "$out"

echo "[deploy-check] hadolint $("$bin/hadolint" --version | grep -oE '[0-9]+\.[0-9.]+')"
"$bin/hadolint" --no-color --config .hadolint.yaml Dockerfile && echo "Dockerfile: no findings" || failed+=(hadolint)

# (The version from the package metadata: `checkov --version` takes as long as a scan.)
echo "[deploy-check] checkov $("$bin/python" -c 'import importlib.metadata as m; print(m.version("checkov"))')"
# --skip-download: no call to the Prisma Cloud API (guidelines, severities); the checks are
# the ones in the package. CKV_SKIP_PACKAGE_UPDATE_CHECK: no PyPI look-up either.
CKV_SKIP_PACKAGE_UPDATE_CHECK=true "$bin/checkov" --skip-download --quiet --compact \
  --framework kubernetes dockerfile -f Dockerfile "${manifests[@]}" || failed+=(checkov)

if ((${#failed[@]})); then
  printf -v list '%s; ' "${failed[@]}"
  echo "[deploy-check] FAILED: ${list%; } — findings above: fix them, or skip with a reason (deploy/CHECKS.md)"
  exit 1
fi
echo "[deploy-check] all deployment files pass, in $((SECONDS - started))s"

#!/usr/bin/env bash
# Deploy Tollgate to a Google Cloud project: APIs, the Firestore database, one service
# account per function and one for their builds, the admin-token secret, indexes, TTL
# policies, the three functions and their public access. Safe to re-run: every step
# checks before it creates (docs/deploy.md).
set -euo pipefail

usage() {
  cat <<'EOF'
usage: deploy.sh PROJECT_ID [REGION] [--dry-run] [--stage-only DIR] [--show-admin-token]

Deploys Tollgate's three Cloud Functions (openai, admin, log) and everything they need
to PROJECT_ID, in REGION (default europe-west1). Re-running converges: nothing that
exists is created again.

  --dry-run           print every gcloud command, in order, and run none
  --stage-only DIR    only build the function source in DIR (no gcloud, PROJECT_ID optional)
  --show-admin-token  print the admin token if this run creates it
  -h, --help          this help

PYTHON selects the interpreter that seeds tiktoken's files (default: .venv/bin/python,
else python3); it needs the packages of requirements.txt. See docs/deploy.md.

Exit status:
  0  everything is deployed, and the three functions are public
  1  a step failed, or a function did not deploy (the others are still deployed)
  2  bad arguments, or a missing tool
  3  the three functions are deployed but not all are public (e.g. an organisation
     policy forbids allUsers): the warning at the end prints the commands that fix it
EOF
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DATABASE=tollgate                      # SPEC §5: named, since "(default)" may be in Datastore mode
ADMIN_SECRET=tollgate-admin-tokens     # functions/admin/app.py ADMIN_TOKENS_SECRET
SECRET_PREFIX=tollgate-ext-            # functions/store/secrets.py SECRET_PREFIX
OPENAI_ADMIN_SECRET=tollgate-openai-admin-key  # functions/admin/reconcile_run.py ADMIN_KEY_SECRET
INDEX_FILE="$ROOT/functions/firestore.indexes.json"
RUNTIME=python312
OPENAI_TIMEOUT_S=900                   # long streams; holds expire after it (TOLLGATE_FUNCTION_TIMEOUT_S)
# `gcloud firestore databases create` returns before the database exists: poll it, this
# many times, this many seconds apart (tests shorten the interval).
DB_WAIT_TRIES=60
POLL_S="${TOLLGATE_DEPLOY_POLL_S:-5}"
[[ "$POLL_S" =~ ^[0-9]+(\.[0-9]+)?$ ]] || POLL_S=5
APIS=(cloudfunctions.googleapis.com run.googleapis.com cloudbuild.googleapis.com
      artifactregistry.googleapis.com firestore.googleapis.com secretmanager.googleapis.com
      iam.googleapis.com logging.googleapis.com cloudscheduler.googleapis.com)

PROJECT="" REGION="" DRY_RUN=0 STAGE_DIR="" SHOW_TOKEN=0
die() { printf 'deploy.sh: %s\n' "$*" >&2; exit 2; }
fail() { printf 'deploy.sh: %s\n' "$*" >&2; exit 1; }
positional=()
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1 ;;
    --show-admin-token) SHOW_TOKEN=1 ;;
    --stage-only) [[ $# -ge 2 && -n "$2" ]] || die "--stage-only needs a directory"
                  STAGE_DIR="$2"; shift ;;
    --stage-only=*) STAGE_DIR="${1#*=}" ;;
    -*) usage >&2; die "unknown option: $1" ;;
    *) positional+=("$1") ;;
  esac
  shift
done
((${#positional[@]} <= 2)) || { usage >&2; die "too many arguments: ${positional[*]}"; }
PROJECT="${positional[0]:-}"
REGION="${positional[1]:-europe-west1}"
[[ -z "$STAGE_DIR" || "$DRY_RUN" == 0 ]] || die "--dry-run and --stage-only exclude each other"
if [[ -z "$STAGE_DIR" && -z "$PROJECT" ]]; then
  usage >&2; die "missing PROJECT_ID (the id of an existing project with billing enabled)"
fi
if [[ -n "$PROJECT" && ! "$PROJECT" =~ ^[a-z][a-z0-9-]{4,28}[a-z0-9]$ ]]; then
  die "'$PROJECT' is not a project id (6-30 characters: lowercase letters, digits, hyphens)"
fi
[[ "$REGION" =~ ^[a-z]+-[a-z]+[0-9]+$ ]] || die "'$REGION' is not a region (e.g. europe-west1)"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tollgate-deploy.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

say() { printf '%s\n' "$*"; }
step() { printf '\n== %s\n' "$*"; }

# The command as one copy-pasteable line: arguments with shell-special characters quoted.
quoted() {
  local a out=() plain='^[-A-Za-z0-9_./:=,@%+]+$'
  for a in "$@"; do
    if [[ "$a" =~ $plain ]]; then out+=("$a"); else out+=("'${a//\'/\'\\\'\'}'"); fi
  done
  printf '%s' "${out[*]}"
}
show() { printf '+ gcloud %s\n' "$(quoted "$@")"; }

# Print, then run (a dry run only prints).
run() { show "$@"; ((DRY_RUN)) || gcloud "$@"; }

# A describe check: success when the resource exists. A dry run assumes nothing exists.
exists() { show "$@"; ((DRY_RUN == 0)) && gcloud "$@" >/dev/null 2>&1; }

# A create; ALREADY_EXISTS (a race, or a resource the check could not see) counts as done.
create() {
  show "$@"
  ((DRY_RUN)) && return 0
  local rc=0
  gcloud "$@" 2>"$WORK/err" || rc=$?
  if ((rc)) && grep -qiE 'already exists|ALREADY_EXISTS' "$WORK/err"; then
    say "  (already exists)"; return 0
  fi
  cat "$WORK/err" >&2
  return "$rc"
}

# An IAM binding (idempotent). Retried: a new service account takes a few seconds to be
# visible to IAM ("does not exist" right after its creation).
bind() {
  show "$@"
  ((DRY_RUN)) && return 0
  local try
  for try in 1 2 3 4 5 6; do
    gcloud "$@" && return 0
    ((try < 6)) || return 1
    say "  retrying in $((try * 5)) s (IAM may not see a new service account yet)"
    sleep "$((try * 5))"
  done
}

# The interpreter that seeds tiktoken (it imports functions.core.encodings, hence tiktoken).
python_for_seed() {
  if [[ -n "${PYTHON:-}" ]]; then printf '%s' "$PYTHON"
  elif [[ -x "$ROOT/.venv/bin/python" ]]; then printf '%s' "$ROOT/.venv/bin/python"
  else printf 'python3'; fi
}

# Step 7: the source directory Cloud Functions builds. gen2 wants main.py at its root.
stage() {
  local dir="$1" py
  [[ -f "$ROOT/web/index.html" ]] || die "web/index.html is missing: nothing to serve on the log page"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"  # absolute: the seeding below runs from the repository root
  rm -rf "${dir:?}/functions" "$dir/web" "$dir/tiktoken" "$dir/main.py" "$dir/requirements.txt" \
         "$dir/.gcloudignore"
  cp -R "$ROOT/functions" "$ROOT/web" "$ROOT/requirements.txt" "$dir/"
  find "$dir" -name __pycache__ -type d -prune -exec rm -rf {} +
  find "$dir" -name '*.pyc' -delete
  cat >"$dir/main.py" <<'PY'
"""Cloud Functions entry points (written by deploy.sh): gen2 loads main.py from the root
of the source; the code itself lives in functions/."""

from functions.main import admin, log, openai

__all__ = ["admin", "log", "openai"]
PY
  printf '__pycache__/\n*.pyc\n' >"$dir/.gcloudignore"
  # tiktoken's two encoding files under their cache names, so nothing is downloaded at start-up
  py="$(python_for_seed)"
  if ! (cd "$ROOT" && "$py" -m functions.core.encodings seed "$dir/tiktoken" >/dev/null); then
    die "could not seed tiktoken's files with $py: it needs requirements.txt installed" \
        "(bash scripts/setup.sh, or set PYTHON=an interpreter that has them)"
  fi
  say "staged the function source in $dir"
}

if [[ -n "$STAGE_DIR" ]]; then
  stage "$STAGE_DIR"
  exit 0
fi
if ((DRY_RUN == 0)) && ! command -v gcloud >/dev/null 2>&1; then
  die "gcloud is not on PATH: install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install)"
fi
command -v python3 >/dev/null 2>&1 || die "python3 is needed (to read the index file)"
export CLOUDSDK_CORE_DISABLE_PROMPTS=1  # unattended: gcloud takes its defaults, never waits
((DRY_RUN)) && say "# dry run: these commands would run, in this order; none is run"

step "1. APIs"
run services enable "${APIS[@]}" "--project=$PROJECT"

step "2. Firestore database '$DATABASE' (native mode)"
if exists firestore databases describe "--database=$DATABASE" "--project=$PROJECT"; then
  say "  exists"
else
  create firestore databases create "--database=$DATABASE" "--location=$REGION" \
    --type=firestore-native "--project=$PROJECT"
  # The create only starts an operation: until it is done the database is not found, and
  # creating its indexes (step 5) would fail. Poll until it can be described.
  DB_DESCRIBE=(firestore databases describe "--database=$DATABASE" "--project=$PROJECT"
               '--format=value(name)')
  show "${DB_DESCRIBE[@]}"
  if ((DRY_RUN == 0)); then
    tries=0
    until [[ -n "$(gcloud "${DB_DESCRIBE[@]}" 2>/dev/null)" ]]; do
      ((++tries < DB_WAIT_TRIES)) ||
        fail "the database '$DATABASE' was not ready after $DB_WAIT_TRIES checks, $POLL_S s" \
             "apart; run deploy.sh again (it will find the database and go on)"
      say "  waiting for the database to be created ..."
      sleep "$POLL_S"
    done
    say "  ready"
  fi
fi

step "3. Service accounts and their roles"
sa() { printf 'tollgate-%s@%s.iam.gserviceaccount.com' "$1" "$PROJECT"; }
for who in openai admin log build scheduler; do
  if exists iam service-accounts describe "$(sa "$who")" "--project=$PROJECT"; then
    say "  $(sa "$who") exists"
  elif [[ "$who" == build ]]; then
    create iam service-accounts create tollgate-build "--project=$PROJECT" \
      "--display-name=Tollgate build" "--description=Builds the Tollgate functions (Cloud Build)"
  elif [[ "$who" == scheduler ]]; then
    # no role at all: Cloud Scheduler signs ID tokens as it, and the admin function
    # accepts them for POST /reconcile and /sweep only (functions/admin/oidc.py)
    create iam service-accounts create tollgate-scheduler "--project=$PROJECT" \
      "--display-name=Tollgate scheduler" \
      "--description=Identity of the Cloud Scheduler jobs that call the Tollgate admin function"
  else
    create iam service-accounts create "tollgate-$who" "--project=$PROJECT" \
      "--display-name=Tollgate $who function" "--description=Runs the Tollgate $who function"
  fi
done
# IAM conditions on Secret Manager resources match the project NUMBER, not its id.
show projects describe "$PROJECT" '--format=value(projectNumber)'
if ((DRY_RUN)); then NUMBER=PROJECT_NUMBER
else NUMBER="$(gcloud projects describe "$PROJECT" '--format=value(projectNumber)')"; fi
EXT_SECRETS="resource.name.startsWith(\"projects/$NUMBER/secrets/$SECRET_PREFIX\")"
# Creating a secret is checked on the project (the parent), whose name never starts with
# the prefix; the project clause admits that check (and listing names) and nothing else:
# reading, adding versions, deleting and IAM are checked on the secret itself.
# The OpenAI admin key (reconciliation) is the admin function's alone: the openai
# function's prefix does not cover it.
ADMIN_SECRETS="$EXT_SECRETS || resource.name.startsWith(\"projects/$NUMBER/secrets/$OPENAI_ADMIN_SECRET\")"
ADMIN_SECRETS+=" || resource.type == \"cloudresourcemanager.googleapis.com/Project\""
grant() {  # grant FUNCTION ROLE CONDITION
  bind projects add-iam-policy-binding "$PROJECT" "--member=serviceAccount:$(sa "$1")" \
    "--role=$2" "--condition=$3" --format=none
}
# openai: reads and writes Firestore (keys, budgets, holds, usage)...
grant openai roles/datastore.user None
# ...and reads the organisation's OpenAI keys, the secrets tollgate-ext-* only.
grant openai roles/secretmanager.secretAccessor \
  "expression=$EXT_SECRETS,title=tollgate-ext-secrets-read"
# admin: reads and writes Firestore (users, projects, members, prices, audit)...
grant admin roles/datastore.user None
# ...creates the secrets tollgate-ext-* and the OpenAI admin key's, adds versions (key
# rotation), and only those.
grant admin roles/secretmanager.admin \
  "expression=$ADMIN_SECRETS,title=tollgate-ext-secrets-admin"
# log: only reads Firestore (a member's calls and spend).
grant log roles/datastore.viewer None
# build: Cloud Build runs the functions' builds as this account (--build-service-account
# below). Projects created since mid-2024 otherwise build as the Compute Engine default
# account, which in most new projects has no role that can build: the deploy then fails
# at build time, and gcloud's own check for that only runs when it may prompt (never here).
grant build roles/cloudbuild.builds.builder None

step "4. Admin token secret '$ADMIN_SECRET'"
TOKEN=""
new_token() { python3 -c 'import secrets; print("tga_" + secrets.token_urlsafe(32))'; }
if exists secrets describe "$ADMIN_SECRET" "--project=$PROJECT"; then
  say "  exists"
  # `secrets create --data-file` is two calls (the secret, then its first version): a run
  # stopped between them leaves a secret without any version, which the admin function
  # cannot read. Give such a secret its first version. One with versions, even disabled
  # or destroyed ones, is left alone: that is an administrator's choice.
  VERSIONS=(secrets versions list "$ADMIN_SECRET" "--project=$PROJECT" --limit=1
            '--format=value(name)')
  show "${VERSIONS[@]}"
  versions="$(gcloud "${VERSIONS[@]}")"  # a failing list stops here: never a blind add
  if [[ -z "$versions" ]]; then
    say "  it has no version: adding its first one (a new admin token)"
    TOKEN="$(new_token)"
    printf '{"admin": "%s"}' "$TOKEN" | run secrets versions add "$ADMIN_SECRET" \
      --data-file=- "--project=$PROJECT"
  fi
else
  # The value goes through stdin (printf is a builtin): never in argv, logs or a dry run.
  # A dry run pipes nothing: create() would return without reading, and printf would
  # die of SIGPIPE (exit 141 under pipefail), depending on who runs first.
  if ((DRY_RUN)); then
    create secrets create "$ADMIN_SECRET" \
      --replication-policy=automatic --data-file=- "--project=$PROJECT"
  else
    TOKEN="$(new_token)"
    printf '{"admin": "%s"}' "$TOKEN" | create secrets create "$ADMIN_SECRET" \
      --replication-policy=automatic --data-file=- "--project=$PROJECT"
  fi
  if ((DRY_RUN == 0)) && grep -qiE 'already exists' "$WORK/err"; then TOKEN=""; fi
fi
# admin (3rd role): reads the admin tokens, this one secret only.
bind secrets add-iam-policy-binding "$ADMIN_SECRET" "--member=serviceAccount:$(sa admin)" \
  --role=roles/secretmanager.secretAccessor --condition=None "--project=$PROJECT" --format=none

step "5. Composite indexes (from functions/firestore.indexes.json)"
# One line per index: collection group, query scope, field configs (tab-separated).
# With --missing, stdin is `indexes composite list --format=json` and only the indexes it
# lacks are printed (Firestore appends __name__ to each index: ignored when comparing).
INDEX_PY="$(cat <<'PY'
import json, sys

def config(f):
    path = f["fieldPath"]
    if any(c in path for c in ",=\t"):
        sys.exit(f"index field path {path!r} cannot be passed to gcloud")
    if "order" in f:
        return f"field-path={path},order={f['order'].lower()}"
    if "arrayConfig" in f:
        return f"field-path={path},array-config={f['arrayConfig'].lower()}"
    sys.exit(f"unsupported index field {f}")

def line(group, index):
    scope = index.get("queryScope", "COLLECTION").lower().replace("_", "-")
    return "\t".join([group, scope] + [config(f) for f in index["fields"]])

def key(text):
    parts = text.split("\t")
    while parts and parts[-1].startswith("field-path=__name__,"):
        parts.pop()
    return "\t".join(parts)

with open(sys.argv[1]) as f:
    wanted = [line(ix["collectionGroup"], ix) for ix in json.load(f).get("indexes", [])]
if sys.argv[2:] == ["--missing"]:
    have = {key(line(ix["name"].split("/collectionGroups/")[1].split("/")[0], ix))
            for ix in json.load(sys.stdin) or []}
    wanted = [w for w in wanted if key(w) not in have]
print("\n".join(dict.fromkeys(wanted)))
PY
)"
indexes() { python3 -c "$INDEX_PY" "$INDEX_FILE" "$@"; }
LIST=(firestore indexes composite list "--database=$DATABASE" "--project=$PROJECT" --format=json)
show "${LIST[@]}"
if ((DRY_RUN)); then missing="$(indexes)"; else missing="$(gcloud "${LIST[@]}" | indexes --missing)"; fi
while IFS=$'\t' read -r -a parts; do
  ((${#parts[@]} >= 3)) || continue
  fields=()
  for f in "${parts[@]:2}"; do fields+=("--field-config=$f"); done
  create firestore indexes composite create "--database=$DATABASE" "--project=$PROJECT" \
    "--collection-group=${parts[0]}" "--query-scope=${parts[1]}" "${fields[@]}" --async
done <<<"$missing"
say "  (indexes build in the background; watch: gcloud firestore indexes composite list --database=$DATABASE --project=$PROJECT)"

step "6. TTL policies: settled holds, closed escrow grants and cache entries only"
# holds.purge_at is written only when a hold is settled or swept: a live (unsettled) hold
# carries no TTL field, so Firestore can never delete one before it is booked (its budget
# would stay held forever). Likewise grants.purge_at is written only when an escrow grant is
# closed. Nothing else in the database expires.
TTLS=("holds purge_at" "grants purge_at" "cache_entries expires_at")
TTL_LIST=(firestore fields ttls list "--database=$DATABASE" "--project=$PROJECT" '--format=value(name)')
show "${TTL_LIST[@]}"
have_ttls=""
((DRY_RUN)) || have_ttls="$(gcloud "${TTL_LIST[@]}")"
for ttl in "${TTLS[@]}"; do
  read -r group field <<<"$ttl"
  if grep -q "/collectionGroups/$group/fields/$field\$" <<<"$have_ttls"; then
    say "  $group.$field: TTL already set"
  else
    run firestore fields ttls update "$field" "--collection-group=$group" --enable-ttl \
      "--database=$DATABASE" "--project=$PROJECT" --async
  fi
done

step "7. Function source"
if ((DRY_RUN)); then
  SOURCE=STAGE_DIR
  say "# would stage main.py, functions/, web/, requirements.txt and tiktoken/ in a temp dir"
else
  SOURCE="$WORK/stage"
  stage "$SOURCE"
fi

step "8. Functions (gen2, $RUNTIME)"
env_flag() {  # --set-env-vars with a custom delimiter should a value ever hold a comma
  local kv sep=, joined=""
  for kv in "$@"; do [[ "$kv" != *,* ]] || sep=@; done
  for kv in "$@"; do joined+="${joined:+$sep}$kv"; done
  [[ "$sep" == , ]] || joined="^@^$joined"
  printf -- '--set-env-vars=%s' "$joined"
}
deploy() {  # deploy NAME MEMORY CONCURRENCY TIMEOUT_S [EXTRA_ENV...]
  local name="$1" memory="$2" concurrency="$3" timeout="$4" env rc=0
  shift 4
  env="$(env_flag "TOLLGATE_GCP_PROJECT=$PROJECT" "TOLLGATE_DATABASE=$DATABASE" \
    TOLLGATE_SECRET_BACKEND=gcp TIKTOKEN_CACHE_DIR=/workspace/tiktoken "THREADS=$concurrency" "$@")"
  # gen2 Python runs the source from /workspace, hence the encodings' path. THREADS (the
  # gunicorn threads) matches the concurrency, as Google advises for Python.
  # No --allow-unauthenticated: with it, gcloud deploys the function and then exits
  # non-zero if the allUsers binding is refused (an organisation policy), which cannot be
  # told from a failed build. Public access is step 9, on its own. (Without the flag and
  # without prompts, gcloud leaves an existing function's access as it is.)
  local cmd=(functions deploy "$name" --gen2 "--region=$REGION" "--project=$PROJECT"
    "--runtime=$RUNTIME" "--source=$SOURCE" "--entry-point=$name" --trigger-http
    "--service-account=$(sa "$name")"
    "--build-service-account=projects/$PROJECT/serviceAccounts/$(sa build)"
    --cpu=1 "--memory=$memory" "--concurrency=$concurrency" "--timeout=${timeout}s" "$env")
  show "${cmd[@]}"
  ((DRY_RUN)) && return 0
  # One function failing must not stop the others (set -e would): note it, go on.
  gcloud "${cmd[@]}" || rc=$?
  if ((rc)); then
    say "deploy.sh: the function $name did not deploy (gcloud exited with $rc); going on" >&2
    NOT_DEPLOYED+=("$name")
  fi
}
NOT_DEPLOYED=() NOT_PUBLIC=()
deployed() { [[ " ${NOT_DEPLOYED[*]-} " != *" $1 "* ]]; }  # ${a[*]-}: bash 3.2 under set -u
# --cpu=1 allows concurrency above one. Memory: tiktoken's encodings take ~110 MB, and a
# call with a maximum-size (8 MiB) body holds ~24 MiB while it runs (raw, parsed, re-sent):
# the benchmark measured a 907 MiB peak for 32 such calls at once, so 40 need 2 GiB.
deploy openai 2Gi 40 "$OPENAI_TIMEOUT_S" "TOLLGATE_FUNCTION_TIMEOUT_S=$OPENAI_TIMEOUT_S"
# The scheduler's ID tokens: their audience is a string both sides agree on, known before
# the deploy (the function's cloudfunctions.net URL), and their email the scheduler's.
SCHEDULER_AUDIENCE="https://$REGION-$PROJECT.cloudfunctions.net/admin"
deploy admin 512Mi 8 120 "TOLLGATE_SCHEDULER_SA=$(sa scheduler)" \
  "TOLLGATE_SCHEDULER_AUDIENCE=$SCHEDULER_AUDIENCE"
deploy log 512Mi 16 60

step "9. Public access (allUsers may invoke; each function does its own auth)"
# Idempotent: an existing binding is kept. Refused where an organisation policy forbids
# allUsers (constraints/iam.allowedPolicyMemberDomains, "domain restricted sharing").
invoker() {  # the command that makes function $1 public
  INVOKER=(functions add-invoker-policy-binding "$1" "--region=$REGION" "--project=$PROJECT"
           --member=allUsers)
}
for fn in openai admin log; do
  deployed "$fn" || continue
  invoker "$fn"
  show "${INVOKER[@]}" --format=none
  ((DRY_RUN)) && continue
  gcloud "${INVOKER[@]}" --format=none || NOT_PUBLIC+=("$fn")
done

step "10. Cloud Scheduler: the daily reconciliation and the sweep every 5 minutes"
# Each job POSTs to the admin function with an OIDC token of tollgate-scheduler (no admin
# token in the job). The function is public (step 9) and checks the token itself, so the
# account needs no invoker role: where Cloud Run checks a token (a private service) it
# replaces the token's signature, which Tollgate would then refuse. Converging: a job
# that exists is updated to this definition, one that does not is created.
job() {  # job NAME SCHEDULE PATH DESCRIPTION
  local verb=create spec
  if exists scheduler jobs describe "$1" "--location=$REGION" "--project=$PROJECT"; then
    verb=update
  fi
  spec=(scheduler jobs "$verb" http "$1" "--location=$REGION" "--project=$PROJECT"
        "--schedule=$2" --time-zone=Etc/UTC "--uri=$SCHEDULER_AUDIENCE$3" --http-method=post
        --attempt-deadline=120s "--description=$4"
        "--oidc-service-account-email=$(sa scheduler)"
        "--oidc-token-audience=$SCHEDULER_AUDIENCE")
  if [[ "$verb" == create ]]; then create "${spec[@]}"; else run "${spec[@]}"; fi
}
if deployed admin; then
  # 06:00 UTC: yesterday's usage has mostly reached OpenAI's API; later days until stable
  job tollgate-reconcile "0 6 * * *" /reconcile \
    "Tollgate: reconcile the ledger with OpenAI's Usage and Costs APIs"
  job tollgate-sweep "*/5 * * * *" /sweep \
    "Tollgate: book expired budget holds, close lapsed grants, resend alerts"
else
  say "  skipped: the admin function is not deployed"
fi

step "11. URLs"
URLS=()  # openai, admin, log (no associative array: macOS ships bash 3.2)
for fn in openai admin log; do
  describe=(functions describe "$fn" --gen2 "--region=$REGION" "--project=$PROJECT"
            '--format=value(serviceConfig.uri)')
  show "${describe[@]}"
  if ((DRY_RUN)); then URLS+=("<$fn URL>")
  elif ! deployed "$fn"; then URLS+=("(not deployed)")
  else URLS+=("$(gcloud "${describe[@]}" || printf '(unknown)')"); fi
done
OPENAI_URL="${URLS[0]}" ADMIN_URL="${URLS[1]}" LOG_URL="${URLS[2]}"
READ_TOKEN="gcloud secrets versions access latest --secret=$ADMIN_SECRET --project=$PROJECT"
if ((DRY_RUN)); then DONE="would be deployed"; else DONE="is deployed"; fi
cat <<EOF

Tollgate $DONE to $PROJECT ($REGION):
  openai  $OPENAI_URL   (OpenAI SDK base_url: $OPENAI_URL/v1)
  admin   $ADMIN_URL   (admin console in a browser: $ADMIN_URL/console/)
  log     $LOG_URL   (members open this page in a browser)

Next steps, with the tollgate command installed (pip install . in a clone of this repository):
  # the admin token (the secret holds {"admin": "<token>"})
  TOKEN="\$($READ_TOKEN | python3 -c 'import json,sys; print(json.load(sys.stdin)["admin"])')"
  tollgate --url $ADMIN_URL --token "\$TOKEN" prices load
  export TOLLGATE_ADMIN_URL=$ADMIN_URL TOLLGATE_ADMIN_TOKEN="\$TOKEN"   # then no flags needed
  tollgate key add-external main --secret-stdin < openai-key.txt
  tollgate user create carol --name Carol --email carol@example.com
  tollgate project create lab --external-key main --budget 5 --models gpt-4o-mini
  tollgate member add lab carol     # prints carol's proxy key, once
  # reconciliation with OpenAI's own usage (README, "Reconciliation"): an admin key, and
  # where OpenAI counts each external key (its project and key ids, from OpenAI's dashboard)
  tollgate openai-admin-key set --secret-stdin < openai-admin-key.txt
  tollgate key openai-ids main --project proj_... --key-id key_...
EOF
if [[ -n "$TOKEN" && "$SHOW_TOKEN" == 1 ]]; then
  printf '\nadmin token (shown once; also in the secret %s): %s\n' "$ADMIN_SECRET" "$TOKEN"
elif [[ -n "$TOKEN" ]]; then
  printf '\nA new admin token is stored in the secret %s; read it with:\n  %s\n' \
    "$ADMIN_SECRET" "$READ_TOKEN"
elif ((DRY_RUN == 0)); then
  printf '\nThe admin token was not created by this run; read it with:\n  %s\n' "$READ_TOKEN"
fi

# Problems last, where they are seen, each with the commands that fix it.
if ((${#NOT_PUBLIC[@]})); then
  {
    printf '\nWARNING: deployed, but not public: %s. Granting allUsers the invoker role was\n' \
      "${NOT_PUBLIC[*]}"
    printf 'refused (gcloud'"'"'s error is above). Usually an organisation policy forbids allUsers\n'
    printf '(constraints/iam.allowedPolicyMemberDomains, "domain restricted sharing"); Tollgate\n'
    printf 'needs public functions (callers use Tollgate keys, not Google accounts). Ask an\n'
    printf 'organisation policy administrator to exempt project %s, then run:\n' "$PROJECT"
    for fn in "${NOT_PUBLIC[@]}"; do
      invoker "$fn"
      printf '  gcloud %s\n' "$(quoted "${INVOKER[@]}")"
    done
    printf '(or run deploy.sh again). See docs/deploy.md, "If something goes wrong".\n'
  } >&2
fi
if ((${#NOT_DEPLOYED[@]})); then
  printf '\ndeploy.sh: not deployed: %s (gcloud'"'"'s errors are above). Fix the cause and run\n' \
    "${NOT_DEPLOYED[*]}" >&2
  printf 'deploy.sh again; it redeploys all three.\n' >&2
  exit 1
fi
((${#NOT_PUBLIC[@]} == 0)) || exit 3

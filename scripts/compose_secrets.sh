#!/usr/bin/env bash
# Random secrets for `docker compose up`, written once to .local/compose-secrets/
# (git-ignored; existing files are kept; COMPOSE_SECRETS_DIR names another place).
# One file per secret the production settings require (tests/test_compose.py). Compose mounts them as Docker secrets
# under /run/secrets/ and the app reads them through the NAME_FILE convention.
#
# Compose bind-mounts secret files with their host permissions, and the app runs
# as an unprivileged user in its container, so the files are world-readable
# inside a directory only you can enter.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${COMPOSE_SECRETS_DIR:-.local/compose-secrets}
mkdir -p "$DIR"
chmod 700 "$DIR"

random() { python3 -c 'import secrets; print(secrets.token_hex(32))'; }
# A Fernet key, as FIELD_ENCRYPTION_KEYS expects (docs/security.md, key rotation).
fernet_key() { python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())'; }

write() {
    local name=$1 value=$2
    if [ -s "$DIR/$name" ]; then
        echo "kept    $DIR/$name"
    else
        printf '%s' "$value" >"$DIR/$name"
        echo "created $DIR/$name"
    fi
    chmod 644 "$DIR/$name"
}

write secret_key "$(random)"
write postgres_password "$(random)"
# The tables' owner (the migrate service) and the app's runtime role (docs/security.md).
write database_url "postgres://primoro:$(cat "$DIR/postgres_password")@postgres:5432/primoro"
write database_app_password "$(random)"
write database_app_url "postgres://primoro_app:$(cat "$DIR/database_app_password")@postgres:5432/primoro"
write field_encryption_keys "$(fernet_key)"
write metrics_token "$(random)"
write dna_client_secret "$(random)"
write dna_terminal_api_key "$(random)"
write dna_terminal_webhook_secret "$(random)"
write gocardless_access_token "$(random)"
write gocardless_webhook_secret "$(random)"

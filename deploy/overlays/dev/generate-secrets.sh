#!/bin/sh
# Writes the dev overlay's credentials once, with random passwords, into secrets/ beside this script
# (git-ignored: no password is ever committed). An existing file is kept, so the passwords do not
# change under running pods (one from before the brokers had users of least privilege is written anew).
# kustomize's secretGenerator turns the files into Secrets:
#   redis-credentials     users.acl (Redis' users, from ../../base/brokers/redis-users.acl) and the
#                         pub/sub's, the state stores' and the default user's name and password
#   rabbitmq-credentials  rabbitmq.conf (its one user: not an administrator, on the power-usage vhost), url
#   dapr-api-token, app-api-token   token: what the sidecars and the apps require of each other
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
dir="$here/secrets"
mkdir -p "$dir"
umask 077
random() { od -An -N18 -tx1 /dev/urandom | tr -d ' \n'; }

if ! grep -q '^pubsub-password=' "$dir/redis.env" 2>/dev/null || [ ! -f "$dir/redis-users.acl" ]; then
  default="$(random)" pubsub="$(random)" state="$(random)"
  printf 'default-password=%s\npubsub-username=pubsub\npubsub-password=%s\nstate-username=state\nstate-password=%s\n' \
    "$default" "$pubsub" "$state" >"$dir/redis.env"
  grep -v '^#' "$here/../../base/brokers/redis-users.acl" |
    sed -e "s/{default}/$default/" -e "s/{pubsub}/$pubsub/" -e "s/{state}/$state/" >"$dir/redis-users.acl"
  echo "wrote $dir/redis.env and $dir/redis-users.acl"
fi
if ! grep -q '/power-usage$' "$dir/rabbitmq.env" 2>/dev/null || [ ! -f "$dir/rabbitmq.conf" ]; then
  password="$(random)"
  printf 'url=amqp://power-usage:%s@rabbitmq:5672/power-usage\n' "$password" >"$dir/rabbitmq.env"
  cat >"$dir/rabbitmq.conf" <<CONF
default_vhost = power-usage
default_user = power-usage
default_pass = $password
default_user_tags.administrator = false
default_permissions.configure = .*
default_permissions.read = .*
default_permissions.write = .*
loopback_users.guest = true
CONF
  echo "wrote $dir/rabbitmq.env and $dir/rabbitmq.conf"
fi
for token in dapr-api-token app-api-token; do
  if [ ! -f "$dir/$token.env" ]; then
    printf 'token=%s\n' "$(random)$(random)" >"$dir/$token.env"
    echo "wrote $dir/$token.env"
  fi
done

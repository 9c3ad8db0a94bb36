#!/bin/sh
# Writes the dev overlay's credentials once, with random passwords, into secrets/ beside this script
# (git-ignored: no password is ever committed). An existing file is kept, so the brokers' passwords
# do not change under running pods. kustomize's secretGenerator turns the files into Secrets.
set -eu
dir="$(cd "$(dirname "$0")" && pwd)/secrets"
mkdir -p "$dir"
umask 077
random() { od -An -N18 -tx1 /dev/urandom | tr -d ' \n'; }

if [ ! -f "$dir/rabbitmq.env" ]; then
  password="$(random)"
  printf 'username=power-usage\npassword=%s\nurl=amqp://power-usage:%s@rabbitmq:5672\n' "$password" "$password" >"$dir/rabbitmq.env"
  echo "wrote $dir/rabbitmq.env"
fi
if [ ! -f "$dir/redis.env" ]; then
  printf 'password=%s\n' "$(random)" >"$dir/redis.env"
  echo "wrote $dir/redis.env"
fi

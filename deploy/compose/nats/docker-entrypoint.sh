#!/bin/sh
# As the nats image's: options alone run nats-server with them.
set -e
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
  set -- nats-server "$@"
fi
exec "$@"

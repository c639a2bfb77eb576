#!/bin/sh
# Image entrypoint. SageMaker starts hosting containers as `docker run IMAGE serve`: exec replaces
# this shell, so `serve` (gunicorn's master) is PID 1 and receives SIGTERM from `docker stop`
# directly. Any other command runs as given (`docker run -it IMAGE bash`, `... python -c ...`).
set -e
case "${1:-serve}" in
  serve)
    [ $# -gt 0 ] && shift
    exec serve "$@"
    ;;
  train)
    echo "This image serves models (docker run IMAGE serve); it does not implement SageMaker training." >&2
    exit 2
    ;;
  *)
    exec "$@"
    ;;
esac

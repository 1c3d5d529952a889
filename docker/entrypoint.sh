#!/bin/sh
# The container's entrypoint. The original container's arguments work as they did:
#   docker run --gpus all -v ROOT:/data IMAGE --config config.list --image_type waggle_cloud
# train on the folder mounted at /data and write ROOT/MODEL-<output_dir>/. Any segtrain command
# works too (docker run -v ROOT:/data IMAGE evaluate /data --checkpoint ...). No arguments: train
# on /data with its config.list. SEGTRAIN_DATA names another data folder (used by the tests).
set -eu
data="${SEGTRAIN_DATA:-/data}"

if [ "$#" -eq 0 ]; then
    set -- train "$data"
fi
case "$1" in
    train)
        needs_data=1 ;;
    -h | --help | --version)
        needs_data=0 ;;
    -*)
        needs_data=1
        case " $* " in
            *" --data "* | *" --data="*) needs_data=0 ;;
            *) set -- "$@" --data "$data" ;;
        esac ;;
    *)
        needs_data=0 ;;
esac
if [ "$needs_data" = 1 ] && [ ! -d "$data" ]; then
    echo "error: no data folder at $data. Mount yours there: docker run -v /path/to/ROOT:$data IMAGE --config config.list" >&2
    exit 2
fi

# -u: unbuffered, so `docker logs -f` shows each progress line as it is printed.
exec python -u -m segtrain "$@"

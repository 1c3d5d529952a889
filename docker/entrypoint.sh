#!/bin/sh
# The container's entrypoint. The original container's arguments work as they did:
#   docker run --gpus all -v ROOT:/data IMAGE --config config.list --image_type waggle_cloud
# train on the folder mounted at /data and write ROOT/MODEL-<output_dir>/. Any segtrain command
# works too (docker run -v ROOT:/data IMAGE evaluate /data --checkpoint ...). No arguments: train
# on /data with its config.list. SEGTRAIN_DATA names another data folder (used by the tests).
set -eu
data="${SEGTRAIN_DATA:-/data}"

needs_data=0
if [ "$#" -eq 0 ]; then
    set -- train "$data"
    needs_data=1
else
    case "$1" in
        -h | --help | --version) ;;
        -*)  # the original's form: train on the mounted folder unless --data names another
            case " $* " in
                *" --data "* | *" --data="*) ;;
                *) set -- "$@" --data "$data"; needs_data=1 ;;
            esac ;;
    esac
fi
if [ "$needs_data" = 1 ] && [ ! -d "$data" ]; then
    echo "error: no data folder at $data. Mount yours there: docker run -v /path/to/ROOT:$data IMAGE --config config.list" >&2
    exit 2
fi

# -u: unbuffered, so `docker logs -f` shows each progress line as it is printed.
exec python -u -m segtrain "$@"

# Sourced by the ci/ scripts. They run as root on fixed paths under /var/tmp, where any
# account may have created something first: a directory there is only used when it is a
# real directory (not a link) owned by root, and a new one is made with a safe mode.
#   safe_dir DIR [MODE [OWNER]]   create DIR (parents too) for OWNER (default: the caller),
#                                 or refuse one that is unsafe
safe_dir() {
  local dir=$1 mode=${2:-0755} owner=${3:-$(id -un)} parent
  parent=$(dirname "$dir")
  if [ "$parent" != "$dir" ] && [ ! -d "$parent" ]; then
    safe_dir "$parent" 0755
  fi
  if [ -L "$dir" ]; then
    echo "refusing $dir: it is a symbolic link" >&2
    exit 1
  fi
  if [ -e "$dir" ]; then
    if [ ! -d "$dir" ]; then
      echo "refusing $dir: it is not a directory" >&2
      exit 1
    fi
    if [ "$(stat -c %U "$dir")" != "$owner" ]; then
      echo "refusing $dir: it belongs to $(stat -c %U "$dir"), not to $owner" >&2
      exit 1
    fi
    chmod "$mode" "$dir"
  else
    mkdir -m "$mode" "$dir"
    chown "$owner:" "$dir"
  fi
}

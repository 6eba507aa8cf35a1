# Sourced by every script here and in bench/: `help_if_asked SCRIPT [PYTHON_SCRIPT] -- ARGS`
# prints, when ARGS hold -h or --help, the script's header comment and, for a script that
# hands over to Python, that program's options; then it exits 0, having installed, built
# and started nothing.
help_if_asked() {
  local script="$1" python=""
  shift
  if [ "${1:-}" != "--" ]; then
    python="$1"
    shift
  fi
  shift
  local arg
  for arg in "$@"; do
    case "$arg" in
      -h|--help)
        # The comment block after the shebang, without its "# ".
        sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p}}' "$script"
        if [ -n "$python" ]; then
          echo
          python3 "$python" --help 2>/dev/null \
            || echo "($python lists its options once its Python packages are installed: scripts/deps.sh)"
        fi
        exit 0
        ;;
    esac
  done
}

P='/srv/bill'\''s app'
I=r1.4.2
L='{"owner":"gw-seoul-1","rollout":"ro-7","release":"r1.4.2","epoch":3,"time":"2026-11-01T10:00:00Z"}'
refuse() { printf '@refused\n%s\n%s\n%s\n' "$1" "$2" "${3:-}"; exit 78; }
login=; ! cd -P -- . 2>/dev/null || login=$PWD
home=${HOME:-}; [ -z "$home" ] || ! cd -P -- "$home" 2>/dev/null || home=$PWD
real=$P; rest=
while [ ! -d "$real" ]; do
  if [ -e "$real" ] || [ -L "$real" ]; then refuse "$real" not-dir; fi
  rest=/${real##*/}$rest; real=${real%/*}; real=${real:-/}
done
cd -P -- "$real" 2>/dev/null || refuse "$real" unresolved
real=${PWD%/}$rest; real=${real:-/}
case $real in /|/bin|/bin/*|/sbin|/sbin/*|/lib|/lib/*|/lib32|/lib32/*|/lib64|/lib64/*|/libx32|/libx32/*|/boot|/boot/*|/dev|/dev/*|/proc|/proc/*|/sys|/sys/*|/run|/run/*|/etc|/etc/*|/home|/root|/usr/bin|/usr/bin/*|/usr/sbin|/usr/sbin/*|/usr/lib|/usr/lib/*|/usr/lib32|/usr/lib32/*|/usr/lib64|/usr/lib64/*|/usr/libx32|/usr/libx32/*|/usr/libexec|/usr/libexec/*|/usr/local/bin|/usr/local/sbin|/usr/local/lib|/usr/local/etc|/usr/local/share|/usr|/var|/opt|/srv|/tmp|/mnt|/media) refuse "$real" system;; esac
case ${real%/*} in /home|/usr|/var) refuse "$real" system;; esac
case $real/ in */.ssh/*) refuse "$real" system;; esac
for x in "$home" "$login"; do
  [ -n "$x" ] || continue
  [ "$real" != "$x" ] || refuse "$real" home "$x"
  case $x in "$real"/*) refuse "$real" holds-home "$x";; esac
done
mkdir -p -- "$P/.outpost" "$P/releases" || exit 70
if ! (set -C; printf '%s' "$L" >"$P/.outpost/lock"); then
  if [ -e "$P/.outpost/lock" ]; then echo @held; cat -- "$P/.outpost/lock"; exit 75; fi
  exit 70
fi
echo @locked
echo @df; df -P -- "$P"
echo @current
if [ -L "$P/current" ]; then printf 'link %s\n' "$(readlink -- "$P/current")"; [ ! -d "$P/current/" ] || echo dir; elif [ -e "$P/current" ]; then echo notlink; fi
F=.outpost-artifact
if [ -f "$P/current/$F" ]; then echo @base; cat -- "$P/current/.outpost-sha256" 2>/dev/null; echo; fi
echo @releases; (cd -- "$P/releases" && ls -1t -- */.outpost-sha256) 2>/dev/null
rm -rf -- "$P/releases/$I.partial" || exit 71
if [ -d "$P/releases/$I" ]; then echo @present; cat -- "$P/releases/$I/.outpost-sha256" 2>/dev/null; echo; exit 0; fi
mkdir -- "$P/releases/$I.partial" || exit 71
echo @partial

# shellcheck shell=sh disable=SC2154  # out, runId, tools, ... come from the derivation
# Builder for run.nix (busybox sh inside the Nix sandbox). Writes key=value
# facts to $out/report and raw copies of the /proc files next to it.
# stderr must stay open until the end: Nix treats EOF on the builder's
# stderr as "build finished" and SIGKILLs the builder.
set -u
mkdir -p "$out"
r=$out/report
say() { printf '%s=%s\n' "$1" "$2" >>"$r"; printf '%s=%s\n' "$1" "$2" >&2; }

say run_id "$runId"
say standin "$standin"
say outer_uid "$(id -u)"
say outer_gid "$(id -g)"
say outer_groups "$(id -G)"
cat /proc/self/status >"$out/status"
cat /proc/self/uid_map >"$out/uid_map"
cat /proc/self/gid_map >"$out/gid_map"
say outer_status_uid "$(grep '^Uid:' /proc/self/status | tr -s '\t ' ' ' | cut -d' ' -f2-)"
say outer_status_gid "$(grep '^Gid:' /proc/self/status | tr -s '\t ' ' ' | cut -d' ' -f2-)"
say outer_capeff "$(grep '^CapEff:' /proc/self/status | cut -f2)"
say outer_nonewprivs "$(grep '^NoNewPrivs:' /proc/self/status | cut -f2)"
say outer_seccomp "$(grep '^Seccomp:' /proc/self/status | cut -f2)"
say outer_uid_map "$(tr -s ' ' <"$out/uid_map" | sed 's/^ //' | paste -sd';')"
say outer_gid_map "$(tr -s ' ' <"$out/gid_map" | sed 's/^ //' | paste -sd';')"
say stat_input "$(stat -c '%u:%g %a' "$tools/bin/busybox")"
say stat_input_dir "$(stat -c '%u:%g %a' "$tools")"
say stat_store "$(stat -c '%u:%g %a' /nix/store)"
say stat_build_dir "$(stat -c '%u:%g %a' "$PWD")"
say stat_out "$(stat -c '%u:%g %a' "$out")"
say pwd "$PWD"
say overflowuid "$(cat /proc/sys/kernel/overflowuid)"
say max_user_namespaces "$(cat /proc/sys/user/max_user_namespaces)"

if [ "$standin" = 1 ]; then
    inner=$(unshare -r id -u 2>"$out/inner.err"); rc=$?
    inner_map=$(unshare -r cat /proc/self/uid_map 2>>"$out/inner.err" | tr -s ' ' | sed 's/^ //')
    inner_stat=$(unshare -r stat -c '%u:%g' "$tools/bin/busybox" 2>>"$out/inner.err")
else
    say rootbox "$rootbox"
    inner=$("$rootbox" run -- id -u 2>"$out/inner.err"); rc=$?
    inner_map=$("$rootbox" run -- cat /proc/self/uid_map 2>>"$out/inner.err" | tr -s ' ' | sed 's/^ //')
    inner_stat=$("$rootbox" run -- stat -c '%u:%g' "$tools/bin/busybox" 2>>"$out/inner.err")
fi
say inner_rc "$rc"
if [ "$standin" != 1 ]; then
    # Evidence only (not checked): what rootbox's own diagnosis says here.
    "$rootbox" doctor >"$out/doctor" 2>&1
    say doctor_rc "$?"
fi
say inner_uid "$inner"
say inner_uid_map "$inner_map"
say inner_stat_input "$inner_stat"
say inner_stderr "$(head -c 2000 "$out/inner.err" | tr '\n' '|')"
exit 0

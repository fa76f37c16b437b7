#!/bin/sh
# preflight agent installer. The controller serves this file at /install.sh; the line that
# `preflight token create --install-command` prints fetches it with the controller's public key
# pinned and runs it:
#
#   { echo PREFLIGHT_JOIN_TOKEN=pfj_...; curl -fsS --proto =https --tlsv1.2 -k \
#     --pinnedpubkey sha256//KEY https://ctl:7443/install.sh; } \
#     | sudo sh -s -- --controller https://ctl:7443 --ca-sha256 HEX --pin sha256//KEY
#
# The join token comes first on the script's own standard input (a shell variable, never a
# command-line argument: those are visible to every user in `ps`), and the script hands it to
# `preflight-agent enroll` in a 0600 file. --token-file FILE and --token (visible in `ps`) also
# work.
#
# What it does, in order, stopping at the first problem with one line `error: ...`:
#   1. checks: root, systemd, a known architecture, curl and sha256sum;
#   2. downloads the agent binary and its SHA-256 with the same pin (or takes --offline BINARY),
#      and verifies it, all in a temporary directory: a wrong pin stops here, nothing written;
#   3. installs /usr/local/bin/preflight-agent and /etc/systemd/system/preflight-agent.service,
#      makes /var/lib/preflight-agent (mode 0700; the agent's key, certificate and agent.toml);
#   4. enrolls with the join token, trusting only the CA with SHA-256 --ca-sha256 (skipped when
#      already enrolled: the enrollment is kept, so re-running upgrades the binary safely);
#   5. enables and starts (or restarts) the unit, and says what it did.
# `--uninstall` removes all of it. `--root PREFIX` installs under PREFIX without calling
# systemctl (for tests and packagers). Run with --help for every option.
#
# The whole script is one function called on the last line, so a download cut short runs
# nothing.
set -eu

BIN_REL=/usr/local/bin/preflight-agent
UNIT_REL=/etc/systemd/system/preflight-agent.service
STATE_REL=/var/lib/preflight-agent
MANIFEST_NAME=install-manifest
MAX_BYTES=536870912

usage() {
	cat <<'USAGE'
usage: install.sh --controller URL --token-file FILE --ca-sha256 HEX --pin sha256//KEY [options]
       install.sh --uninstall [--root PREFIX]

Installs, enrolls and starts the preflight agent as a systemd service. Safe to re-run: an
existing enrollment is kept and the binary is replaced when it changed.

  --controller URL     the controller, https://HOST:PORT
  --token-file FILE    file holding the join token (`preflight token create`); or set
                       PREFLIGHT_JOIN_TOKEN (the printed one-liner does)
  --token TOKEN        the join token itself (visible to other users in `ps`: avoid)
  --ca-sha256 HEX      SHA-256 of the controller's CA certificate (trusted for enrollment)
  --pin sha256//KEY    the controller's public-key pin (trusted for downloads)
  --name ID            agent id to ask for (default: the host name)
  --listen ADDR        where the agent serves (default 0.0.0.0:7444)
  --offline BINARY     install this copied binary instead of downloading one (air-gapped sites)
  --sha256 HEX         with --offline: the binary's expected SHA-256
  --root PREFIX        install under PREFIX, call no systemctl (tests, packagers)
  --uninstall          stop the agent and remove everything this script installed
  -h, --help           this text
USAGE
}

die() {
	echo "error: $*" >&2
	exit 1
}

say() {
	echo "$*"
}

# Runs or, under --root, prints a systemctl command.
sysctl_run() {
	if [ -n "$PREFIX" ]; then
		say "would run: systemctl $*"
	else
		systemctl "$@"
	fi
}

# mkdir -p that records, in CREATED_DIRS, every directory it made (for --uninstall).
make_dirs() {
	md_path=$PREFIX
	md_rest=${1#/}
	while [ -n "$md_rest" ]; do
		md_part=${md_rest%%/*}
		if [ "$md_part" = "$md_rest" ]; then md_rest=""; else md_rest=${md_rest#*/}; fi
		md_path=$md_path/$md_part
		if [ ! -d "$md_path" ]; then
			mkdir -m 0755 "$md_path"
			CREATED_DIRS="$CREATED_DIRS ${md_path#"$PREFIX"}"
		fi
	done
}

# curl with the pin; the controller is trusted through the pin only (see the header).
fetch() {
	curl -fsS --proto =https --tlsv1.2 -k --pinnedpubkey "$PIN" \
		--connect-timeout 15 --retry 3 --retry-delay 2 \
		--speed-limit 1024 --speed-time 120 --max-filesize "$MAX_BYTES" \
		-o "$2" "$CONTROLLER$1"
}

fetch_or_die() {
	rc=0
	fetch "$1" "$2" 2>"$TMP/curl.err" || rc=$?
	case $rc in
	0) return 0 ;;
	90) die "pin mismatch: the controller at $CONTROLLER does not have the public key $PIN; nothing was written (get a fresh line with \`preflight token create --install-command\`)" ;;
	6) die "cannot resolve the controller's host in $CONTROLLER (curl exit 6)" ;;
	7 | 28 | 35 | 56) die "cannot reach the controller at $CONTROLLER (curl exit $rc: $(tail -n 1 "$TMP/curl.err"))" ;;
	22) die "the controller refused $1 ($(tail -n 1 "$TMP/curl.err")); does it serve agents for linux-$ARCH (--agent-dir)?" ;;
	63) die "$1 is larger than $MAX_BYTES bytes" ;;
	*) die "downloading $CONTROLLER$1 failed (curl exit $rc: $(tail -n 1 "$TMP/curl.err"))" ;;
	esac
}

sha256_of() {
	sha256sum "$1" | cut -d ' ' -f 1
}

agent_id_of() {
	sed -n 's/^agent_id = "\(.*\)"$/\1/p' "$1" 2>/dev/null || true
}

uninstall() {
	bin=$PREFIX$BIN_REL
	unit=$PREFIX$UNIT_REL
	state=$PREFIX$STATE_REL
	if [ -z "$PREFIX" ] && [ -f "$unit" ]; then
		systemctl disable --now preflight-agent.service >/dev/null 2>&1 || true
	elif [ -n "$PREFIX" ]; then
		say "would run: systemctl disable --now preflight-agent.service"
	fi
	dirs=""
	if [ -f "$state/$MANIFEST_NAME" ]; then
		dirs=$(cat "$state/$MANIFEST_NAME")
	fi
	removed=""
	for f in "$unit" "$bin"; do
		if [ -e "$f" ]; then
			rm -f "$f"
			removed="$removed $f"
		fi
	done
	if [ -e "$state" ]; then
		rm -rf "$state"
		removed="$removed $state"
	fi
	# Directories the installer made, deepest first, only if nothing else was put in them.
	for d in $(echo "$dirs" | tr ' ' '\n' | sort -r); do
		case $d in /*) ;; *) continue ;; esac
		rmdir "$PREFIX$d" 2>/dev/null && removed="$removed $PREFIX$d"
	done
	if [ -z "$PREFIX" ]; then systemctl daemon-reload || true; else say "would run: systemctl daemon-reload"; fi
	if [ -z "$removed" ]; then
		say "nothing to remove: the preflight agent is not installed${PREFIX:+ under $PREFIX}"
	else
		say "removed:$removed"
		say "the controller still lists this agent: revoke it there with \`preflight agents revoke ID\`"
	fi
}

# Removes what a failed first install made, so the host is as it was.
undo_fresh_install() {
	rm -f "$PREFIX$UNIT_REL" "$PREFIX$BIN_REL"
	rm -rf "$PREFIX$STATE_REL"
	for d in $(echo "$CREATED_DIRS" | tr ' ' '\n' | sort -r); do
		rmdir "$PREFIX$d" 2>/dev/null || true
	done
}

unit_text() {
	cat <<'UNIT'
# preflight-agent: the agent on a managed server. deploy/install.sh writes this file to
# /etc/systemd/system/; packagers can ship it as is. State (key, certificate, agent.toml) is in
# /var/lib/preflight-agent, mode 0700, made by `preflight-agent enroll`.
#
# The agent runs as root, on purpose: hardening audits and changes system configuration owned
# by root (/etc, sysctl, nftables) and benchmarks write test files on whatever directory the
# operator names. What it keeps, and why:
#   CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_CHOWN, CAP_FSETID: read and rewrite
#     configuration files of any owner, keeping their owner and mode;
#   CAP_NET_ADMIN: apply and roll back nftables rule sets, set network sysctls;
#   CAP_NET_BIND_SERVICE, CAP_NET_RAW: probe listeners on the ports a plan names (also < 1024);
#   CAP_SYS_PTRACE: find the process owning a listening socket (/proc/PID/fd of every user);
#   CAP_SYS_ADMIN: kernel sysctls and mount options that hardening checks and sets;
#   CAP_SYS_RESOURCE: raise its own limits for benchmarks with many files.
# Everything else is dropped: no module loading, no raw disk or memory, no clock, no reboot, no
# new privileges, no devices. ProtectSystem and ProtectHome stay off because hardening writes
# /etc and benchmarks may target /home or /srv.
[Unit]
Description=preflight agent (readiness checks, benchmarks, hardening)
Documentation=https://github.com/preflight/preflight#install-an-agent
Wants=network-online.target
After=network-online.target
# Stop restarting after 10 failures in 5 minutes: a broken setup shows as failed.
StartLimitIntervalSec=300
StartLimitBurst=10

[Service]
Type=simple
ExecStart=/usr/local/bin/preflight-agent run --state-dir /var/lib/preflight-agent
Restart=on-failure
RestartSec=5s
TimeoutStopSec=30s
CapabilityBoundingSet=CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_FOWNER CAP_CHOWN CAP_FSETID CAP_NET_ADMIN CAP_NET_BIND_SERVICE CAP_NET_RAW CAP_SYS_PTRACE CAP_SYS_ADMIN CAP_SYS_RESOURCE
NoNewPrivileges=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectClock=yes
ProtectHostname=yes
ProtectControlGroups=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RestrictNamespaces=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
SystemCallArchitectures=native
UMask=0077
LimitNOFILE=65536
Environment=PREFLIGHT_LOG=info

[Install]
WantedBy=multi-user.target
UNIT
}

main() {
	CONTROLLER="" TOKEN=${PREFLIGHT_JOIN_TOKEN:-} TOKEN_FILE="" CA_SHA256="" PIN="" NAME="" LISTEN="" OFFLINE="" OFFLINE_SHA=""
	PREFIX="" UNINSTALL=no CREATED_DIRS=""
	while [ $# -gt 0 ]; do
		case $1 in
		--controller | --token | --token-file | --ca-sha256 | --pin | --name | --listen | --offline | --sha256 | --root)
			[ $# -ge 2 ] || die "$1 needs a value (see --help)"
			case $1 in
			--controller) CONTROLLER=$2 ;;
			--token) TOKEN=$2 ;;
			--token-file) TOKEN_FILE=$2 ;;
			--ca-sha256) CA_SHA256=$2 ;;
			--pin) PIN=$2 ;;
			--name) NAME=$2 ;;
			--listen) LISTEN=$2 ;;
			--offline) OFFLINE=$2 ;;
			--sha256) OFFLINE_SHA=$2 ;;
			--root) PREFIX=$2 ;;
			esac
			shift 2
			;;
		--uninstall)
			UNINSTALL=yes
			shift
			;;
		-h | --help)
			usage
			exit 0
			;;
		*) die "unknown option $1 (see --help)" ;;
		esac
	done

	if [ -n "$PREFIX" ]; then
		case $PREFIX in /*) ;; *) PREFIX=$(pwd)/$PREFIX ;; esac
		PREFIX=${PREFIX%/}
		[ -d "$PREFIX" ] || die "--root $PREFIX is not a directory"
	else
		[ "$(id -u)" = 0 ] || die "run as root (sudo sh -s -- ...): the agent is installed in /usr/local/bin and /etc/systemd/system"
		if [ ! -d /run/systemd/system ] || ! command -v systemctl >/dev/null 2>&1; then
			die "systemd is not running on this host: install the binary by hand and run \`preflight-agent run\` under your init system (or use --root to stage files)"
		fi
	fi

	if [ "$UNINSTALL" = yes ]; then
		uninstall
		return 0
	fi

	case $(uname -m) in
	x86_64 | amd64) ARCH=x86_64 ;;
	aarch64 | arm64) ARCH=aarch64 ;;
	*) die "unsupported architecture $(uname -m): preflight agents exist for x86_64 and aarch64" ;;
	esac
	[ "$(uname -s)" = Linux ] || die "unsupported system $(uname -s): the agent runs on Linux"
	command -v sha256sum >/dev/null 2>&1 || die "sha256sum is missing (coreutils)"

	state=$PREFIX$STATE_REL
	enrolled=""
	if [ -f "$state/agent.toml" ]; then
		enrolled=$(agent_id_of "$state/agent.toml")
		[ -n "$enrolled" ] || enrolled="(unknown id)"
	fi

	case $CONTROLLER in
	https://?*) CONTROLLER=${CONTROLLER%/} ;;
	"")
		if [ -z "$enrolled" ] || [ -z "$OFFLINE" ]; then
			die "--controller is missing (see --help)"
		fi
		;;
	*) die "--controller must start with https:// (got $CONTROLLER)" ;;
	esac
	if [ -n "$TOKEN_FILE" ]; then
		[ -r "$TOKEN_FILE" ] || die "--token-file $TOKEN_FILE cannot be read"
		TOKEN=$(head -n 1 "$TOKEN_FILE")
	fi
	if [ -z "$enrolled" ]; then
		[ -n "$TOKEN" ] || die "--token is missing: \`preflight token create --install-command\` prints the whole line"
		echo "$CA_SHA256" | grep -Eq '^[0-9a-fA-F]{64}$' || die "--ca-sha256 must be 64 hex digits (got '$CA_SHA256')"
	fi
	if [ -z "$OFFLINE" ]; then
		command -v curl >/dev/null 2>&1 || die "curl is missing: install it, or copy the binary and use --offline BINARY"
		case $PIN in
		sha256//?*) ;;
		*) die "--pin must look like sha256//BASE64 (got '$PIN'): it is in the line \`preflight token create --install-command\` prints" ;;
		esac
	fi

	TMP=$(mktemp -d)
	trap 'rm -rf "$TMP"' EXIT INT TERM
	chmod 0700 "$TMP"

	# 2. The binary, verified, still in the temporary directory.
	if [ -n "$OFFLINE" ]; then
		[ -f "$OFFLINE" ] || die "--offline $OFFLINE is not a file"
		cp "$OFFLINE" "$TMP/agent"
		if [ -n "$OFFLINE_SHA" ]; then
			got=$(sha256_of "$TMP/agent")
			[ "$got" = "$OFFLINE_SHA" ] || die "$OFFLINE has SHA-256 $got, not $OFFLINE_SHA; nothing was written"
			source="$OFFLINE (SHA-256 verified)"
		else
			source="$OFFLINE (not verified: no --sha256)"
		fi
	else
		fetch_or_die "/agent/linux-$ARCH.sha256" "$TMP/agent.sha256"
		want=$(cut -d ' ' -f 1 "$TMP/agent.sha256")
		echo "$want" | grep -Eq '^[0-9a-f]{64}$' || die "the controller sent a malformed SHA-256 for linux-$ARCH"
		fetch_or_die "/agent/linux-$ARCH" "$TMP/agent"
		got=$(sha256_of "$TMP/agent")
		[ "$got" = "$want" ] || die "the downloaded agent has SHA-256 $got, the controller announced $want; nothing was written (retry)"
		source="$CONTROLLER/agent/linux-$ARCH (SHA-256 $got)"
	fi

	# 3. Files.
	bin=$PREFIX$BIN_REL
	unit=$PREFIX$UNIT_REL
	fresh=yes
	if [ -e "$bin" ] || [ -e "$unit" ] || [ -e "$state" ]; then fresh=no; fi
	done_list=""
	make_dirs "${BIN_REL%/*}"
	if [ -f "$bin" ] && cmp -s "$TMP/agent" "$bin"; then
		version=$("$bin" --version 2>/dev/null) || version="?"
		done_list="$done_list\n  $bin: unchanged ($version)"
		bin_changed=no
	else
		# Tried beside its final place (/tmp is often mounted noexec), then renamed over the
		# old one, which a running agent keeps using until it restarts.
		cp "$TMP/agent" "$bin.new"
		chmod 0755 "$bin.new"
		if ! version=$("$bin.new" --version 2>/dev/null); then
			rm -f "$bin.new"
			[ "$fresh" = no ] || undo_fresh_install
			die "the agent binary does not run on this host ($(uname -m)); nothing was changed"
		fi
		mv -f "$bin.new" "$bin"
		done_list="$done_list\n  $bin: $version from $source"
		bin_changed=yes
	fi
	make_dirs "${UNIT_REL%/*}"
	unit_text >"$TMP/unit"
	if [ -f "$unit" ] && cmp -s "$TMP/unit" "$unit"; then
		done_list="$done_list\n  $unit: unchanged"
	else
		cp "$TMP/unit" "$unit.new"
		chmod 0644 "$unit.new"
		mv -f "$unit.new" "$unit"
		done_list="$done_list\n  $unit: written"
	fi
	make_dirs "${STATE_REL%/*}"
	if [ ! -d "$state" ]; then
		mkdir -m 0700 "$state"
	fi
	chmod 0700 "$state"
	if [ -n "$CREATED_DIRS" ]; then
		echo "$CREATED_DIRS" | tr ' ' '\n' | sed '/^$/d' >>"$state/$MANIFEST_NAME"
		chmod 0600 "$state/$MANIFEST_NAME"
	fi

	# 4. Enrollment.
	if [ -n "$enrolled" ]; then
		done_list="$done_list\n  $state: already enrolled as $enrolled, kept"
	else
		# The token goes in a file only root can read, never on a command line.
		(umask 077 && printf '%s\n' "$TOKEN" >"$TMP/token")
		set -- enroll --controller "$CONTROLLER" --token-file "$TMP/token" --ca-sha256 "$CA_SHA256" --state-dir "$state"
		[ -z "$NAME" ] || set -- "$@" --name "$NAME"
		[ -z "$LISTEN" ] || set -- "$@" --listen "$LISTEN"
		rc=0
		PREFLIGHT_LOG=error "$bin" "$@" >"$TMP/enroll.out" 2>"$TMP/enroll.err" || rc=$?
		if [ $rc -ne 0 ]; then
			msg=$(sed -n 's/^error: //p' "$TMP/enroll.err" | tail -n 1)
			[ -n "$msg" ] || msg=$(tail -n 1 "$TMP/enroll.err")
			if [ "$fresh" = yes ]; then
				undo_fresh_install
				die "enrollment failed, nothing left installed: $msg"
			fi
			die "enrollment failed: $msg"
		fi
		enrolled=$(agent_id_of "$state/agent.toml")
		done_list="$done_list\n  $state: enrolled as $enrolled (mode 0700)"
	fi

	# 5. Service.
	sysctl_run daemon-reload
	if [ -z "$PREFIX" ] && systemctl is-active --quiet preflight-agent.service; then
		if [ "$bin_changed" = yes ]; then
			systemctl restart preflight-agent.service
			done_list="$done_list\n  preflight-agent.service: restarted on the new binary"
		else
			done_list="$done_list\n  preflight-agent.service: running, left alone"
		fi
	else
		sysctl_run enable --now preflight-agent.service
		if [ -z "$PREFIX" ]; then
			done_list="$done_list\n  preflight-agent.service: enabled and started"
		else
			done_list="$done_list\n  preflight-agent.service: not started (--root)"
		fi
	fi
	printf 'preflight agent installed%s:%b\n' "${PREFIX:+ under $PREFIX}" "$done_list"
	if [ -z "$PREFIX" ]; then
		say "check it with: systemctl status preflight-agent; on the controller: preflight agents"
	fi
}

main "$@"

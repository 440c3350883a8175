"""The bash completion of rpctl, made from the parser.

Commands and options come from what `build_parser()` builds, when the
package is built (debian/rules), so they cannot drift; group and member
names are asked of `rpctl status --json` when a word needs one (the one
source that knows this network namespace's groups and their members' names).

    python3 -m rpctl.cli.completion > /usr/share/bash-completion/completions/rpctl

The script needs nothing but bash (not the bash-completion package's helpers):
it is also what a clone's user sources by hand.  Not imported by the command
line itself.
"""

from __future__ import annotations

import sys
from typing import Iterable, Optional

from .parser_tree import Command, Option, read_parser

__all__ = ["completion_script", "value_kind", "main"]

# What the word after an option (or a positional argument) is, for the script:
#   group        a group name             member    a member name
#   assignment   NAME=VALUE (a member's)  file      a path
#   interface    a network device         command   a command and its arguments
#   choices      one of the option's choices
#   ""           anything: nothing to offer
GROUP_OPTIONS = {"group"}
FILE_METAVARS = {"FILE"}
INTERFACE_METAVARS = {"IFACE", "DEV"}
MEMBER_POSITIONALS = {"name", "names"}
NEW_NAME_COMMANDS = {"register"}  # their NAME is a new member's: nothing to offer
ASSIGNMENT_POSITIONALS = {"assignments"}


def value_kind(command: str, opt: Option) -> str:
    """What the completion offers for the value of `opt` of `command` (see the table above)."""
    if opt.choices:
        return "choices"
    if opt.nargs == "...":  # argparse.REMAINDER: `run ... -- CMD ...`
        return "command"
    if opt.positional:
        if opt.dest in MEMBER_POSITIONALS and command not in NEW_NAME_COMMANDS:
            return "member"
        if opt.dest in ASSIGNMENT_POSITIONALS:
            return "assignment"
        return ""
    if opt.dest in GROUP_OPTIONS:
        return "group"
    if opt.metavar in FILE_METAVARS:
        return "file"
    if opt.metavar in INTERFACE_METAVARS:
        return "interface"
    return ""


def _words(items: Iterable[str]) -> str:
    return " ".join(items)


def _case_options(commands: Iterable[Command]) -> str:
    """`case $cmd in register) echo "--pid --fd ...";; esac`: every flag of every command."""
    lines = [f'        {c.name}) echo "{_words(f for o in c.options for f in o.flags)} --help" ;;' for c in commands]
    return "\n".join(lines)


def _case_values(commands: Iterable[Command]) -> str:
    """`case "$cmd $option" in "register --group"|"register -g") echo group ;;`: the value kind of every
    option that takes a value, and `CMD @1` ... for positional arguments by their place."""
    lines = []
    for c in commands:
        place = 0
        for o in c.options:
            if o.positional:
                place += 1
                keys = [f"{c.name} @{place}"] + ([f"{c.name} @*"] if o.nargs in ("*", "+") else [])
            elif o.takes_value:
                keys = [f"{c.name} {f}" for f in o.flags]
            else:
                continue
            kind = value_kind(c.name, o)
            choices = f" {_words(o.choices)}" if kind == "choices" else ""
            lines.append("        " + "|".join(f'"{k}"' for k in keys) + f') echo "{kind}{choices}" ;;')
    return "\n".join(lines)


SCRIPT = r'''# bash completion of rpctl: commands, options, group and member names.
# Made by rpctl.cli.completion from the program itself: do not edit.

_rpctl_commands="@COMMANDS@"

_rpctl_options() {
    case "$1" in
@OPTIONS@
        "") echo "--traceback --version --help" ;;
    esac
}

# The kind of value a word takes: "CMD --option" (the word after that option)
# or "CMD @N" (the Nth positional argument).
_rpctl_value() {
    case "$1" in
@VALUES@
        *) return 1 ;;
    esac
}

# Group names (groups) or the member names of a group (members [GROUP]) from
# `rpctl status --json`: the groups of this network namespace.
_rpctl_names() {
    local what="$1" group="$2" py=/usr/bin/python3
    [ -x "$py" ] || py=python3  # Debian's python3 starts fastest: no virtualenv or shim in front of it
    rpctl status --json ${group:+--group "$group"} 2>/dev/null | "$py" -c '
import json, sys
try:
    doc = json.load(sys.stdin)
except ValueError:
    sys.exit(0)
for g in doc.get("groups", []):
    for name in ([g.get("name")] if sys.argv[1] == "groups" else [m.get("name") for m in g.get("members", [])]):
        print(name)
' "$what" 2>/dev/null
}

_rpctl() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="" cmd="" group="" i w n=0 kind
    COMPREPLY=()
    # "=" is a word of its own in COMP_WORDS (COMP_WORDBREAKS): NAME=VALUE's value offers nothing.
    [ "$COMP_CWORD" -gt 0 ] && prev="${COMP_WORDS[COMP_CWORD-1]}"
    if [ "$cur" = "=" ] || [ "$prev" = "=" ]; then
        return 0
    fi
    # The command, the group named on the line, and how many positional
    # arguments stand before the cursor.
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${COMP_WORDS[i]}"
        if [ "$w" = "--" ] && [ -n "$cmd" ]; then
            # Everything after -- is a command of its own (run, restart, rollout).
            if [ "$i" -eq $((COMP_CWORD - 1)) ]; then
                mapfile -t COMPREPLY < <(compgen -c -- "$cur")
            else
                compopt -o filenames 2>/dev/null
                mapfile -t COMPREPLY < <(compgen -f -- "$cur")
            fi
            return 0
        fi
        case "$w" in
            --group|-g) group="${COMP_WORDS[i+1]}" ;;
            --group=*) group="${w#--group=}" ;;
        esac
        if [ -z "$cmd" ]; then
            case "$w" in -*) ;; *) cmd="$w" ;; esac
            continue
        fi
        # Options, "=", the VALUE of NAME=VALUE and an option's value are no positional argument.
        case "$w" in -*|=) continue ;; esac
        [ "${COMP_WORDS[i-1]}" = "=" ] && continue
        [[ "${COMP_WORDS[i-1]}" == -* ]] && _rpctl_value "$cmd ${COMP_WORDS[i-1]}" >/dev/null && continue
        n=$((n + 1))
    done

    if [ -z "$cmd" ]; then
        if [[ "$cur" == -* ]]; then
            mapfile -t COMPREPLY < <(compgen -W "$(_rpctl_options "")" -- "$cur")
        else
            mapfile -t COMPREPLY < <(compgen -W "$_rpctl_commands" -- "$cur")
        fi
        return 0
    fi
    if [[ "$prev" == -* ]] && kind="$(_rpctl_value "$cmd $prev")"; then
        :
    elif [[ "$cur" == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$(_rpctl_options "$cmd")" -- "$cur")
        return 0
    else
        kind="$(_rpctl_value "$cmd @$((n + 1))" || _rpctl_value "$cmd @*")" || return 0
    fi
    case "$kind" in
        choices\ *) mapfile -t COMPREPLY < <(compgen -W "${kind#choices }" -- "$cur") ;;
        group) mapfile -t COMPREPLY < <(compgen -W "$(_rpctl_names groups)" -- "$cur") ;;
        member) mapfile -t COMPREPLY < <(compgen -W "$(_rpctl_names members "$group")" -- "$cur") ;;
        assignment)
            compopt -o nospace 2>/dev/null
            mapfile -t COMPREPLY < <(compgen -W "$(_rpctl_names members "$group")" -S "=" -- "$cur") ;;
        interface) mapfile -t COMPREPLY < <(compgen -W "$(ls /sys/class/net 2>/dev/null)" -- "$cur") ;;
        file)
            compopt -o filenames 2>/dev/null
            mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
        command) mapfile -t COMPREPLY < <(compgen -W "--" -- "$cur") ;;
    esac
    return 0
}

complete -F _rpctl rpctl
'''


def completion_script(parser) -> str:
    """The whole bash completion script of the commands and options `parser` has."""
    _, commands = read_parser(parser)
    return (SCRIPT.replace("@COMMANDS@", _words(c.name for c in commands))
            .replace("@OPTIONS@", _case_options(commands))
            .replace("@VALUES@", _case_values(commands)))


def main(argv: Optional[list[str]] = None) -> int:
    from .main import build_parser

    sys.stdout.write(completion_script(build_parser()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

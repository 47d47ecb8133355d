#!/bin/sh
# Usage: tools/soak.sh [ROUNDS=100] [CLIENTS=6] [IMAGE_SIDE=256] [SEED=random]  — SIGKILL soak of `lookalike serve` (release build)
#
# Runs tests/crash.rs's acknowledged_adds_survive_random_sigkills at length: CLIENTS streams
# of AddImages into a `lookalike serve` child that is SIGKILLed at a random moment each round
# (up to LOOKALIKE_SOAK_MAX_DELAY_MS, default 2000 here, after the streams open) and
# restarted on the same data directory; after every restart every acknowledged entry is
# checked (present once, right metadata, found by its image). Prints one line per round and
# a summary: rounds survived, items acknowledged, entries checked. A failure names its
# round; re-run it with the same SEED (printed first) to replay the same kill delays.
set -eu
cd "$(dirname "$0")/.."
ROUNDS=${1:-100}
CLIENTS=${2:-6}
SIDE=${3:-256}
SEED=${4:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
DELAY=${LOOKALIKE_SOAK_MAX_DELAY_MS:-2000}
echo "soak: $ROUNDS rounds, $CLIENTS clients, ${SIDE}x$SIDE images, kills within $DELAY ms, seed $SEED" >&2
LOOKALIKE_SOAK_ROUNDS=$ROUNDS LOOKALIKE_SOAK_CLIENTS=$CLIENTS LOOKALIKE_SOAK_SIDE=$SIDE \
LOOKALIKE_SOAK_SEED=$SEED LOOKALIKE_SOAK_MAX_DELAY_MS=$DELAY \
    exec cargo test --release --test crash -- --exact acknowledged_adds_survive_random_sigkills --nocapture

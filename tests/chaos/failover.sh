#!/usr/bin/env bash
# The failover test: two Boxoffice instances on the local Patroni cluster, a storm of keyed
# holds, payments and the other operations on one hot event (big enough not to sell out,
# so that a hold can succeed after each fault); 20 s in, kill -9 of the
# primary's postmaster; 50 s in, kill -9 of the whole primary node (its Patroni with its
# PostgreSQL). Passes when the history checker finds nothing and the recovery goals are met
# (tests/chaos/recovery.py: a hold succeeds again within 15 s of the postmaster kill and
# 30 s of the node kill; every retried call has its answer within 30 s of recovery; no 500,
# no request past the timeout). About 2 minutes.
set -euo pipefail
exec "$(dirname "$0")/run.sh" --instances 2 --duration 80 --seed 0 --tickets 50000 \
    --faults '20:primary-kill,50:node-kill' --recovery-goals --out /tmp/boxoffice-failover "$@"

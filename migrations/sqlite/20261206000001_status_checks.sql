-- States are closed sets: each state column takes only the words `aiedge_core::states` knows
-- (the store's tests write each word, and a wrong one, on both engines). This is the SQLite
-- half: SQLite cannot add a constraint to an existing table, so triggers refuse the writes a
-- CHECK would (../postgres has the CHECKs).

create trigger jobs_status_check_insert before insert on jobs
when new.status not in ('queued', 'dispatched', 'running', 'succeeded', 'failed', 'cancelled')
begin select raise(abort, 'CHECK constraint failed: jobs.status'); end;
create trigger jobs_status_check_update before update of status on jobs
when new.status not in ('queued', 'dispatched', 'running', 'succeeded', 'failed', 'cancelled')
begin select raise(abort, 'CHECK constraint failed: jobs.status'); end;
create trigger job_events_status_check_insert before insert on job_events
when new.status not in ('queued', 'dispatched', 'running', 'succeeded', 'failed', 'cancelled')
begin select raise(abort, 'CHECK constraint failed: job_events.status'); end;
create trigger job_events_status_check_update before update of status on job_events
when new.status not in ('queued', 'dispatched', 'running', 'succeeded', 'failed', 'cancelled')
begin select raise(abort, 'CHECK constraint failed: job_events.status'); end;
create trigger job_attempts_outcome_check_insert before insert on job_attempts
when new.outcome not in ('dispatched', 'running', 'succeeded', 'failed', 'lost', 'cancelled')
begin select raise(abort, 'CHECK constraint failed: job_attempts.outcome'); end;
create trigger job_attempts_outcome_check_update before update of outcome on job_attempts
when new.outcome not in ('dispatched', 'running', 'succeeded', 'failed', 'lost', 'cancelled')
begin select raise(abort, 'CHECK constraint failed: job_attempts.outcome'); end;
create trigger nodes_status_check_insert before insert on nodes
when new.status not in ('waiting', 'active', 'stopping', 'dead')
begin select raise(abort, 'CHECK constraint failed: nodes.status'); end;
create trigger nodes_status_check_update before update of status on nodes
when new.status not in ('waiting', 'active', 'stopping', 'dead')
begin select raise(abort, 'CHECK constraint failed: nodes.status'); end;
create trigger nodes_admin_state_check_insert before insert on nodes
when new.admin_state not in ('enabled', 'disabled', 'draining', 'removed')
begin select raise(abort, 'CHECK constraint failed: nodes.admin_state'); end;
create trigger nodes_admin_state_check_update before update of admin_state on nodes
when new.admin_state not in ('enabled', 'disabled', 'draining', 'removed')
begin select raise(abort, 'CHECK constraint failed: nodes.admin_state'); end;
create trigger node_events_from_status_check_insert before insert on node_events
when new.from_status not in ('waiting', 'active', 'stopping', 'dead')
begin select raise(abort, 'CHECK constraint failed: node_events.from_status'); end;
create trigger node_events_from_status_check_update before update of from_status on node_events
when new.from_status not in ('waiting', 'active', 'stopping', 'dead')
begin select raise(abort, 'CHECK constraint failed: node_events.from_status'); end;
create trigger node_events_to_status_check_insert before insert on node_events
when new.to_status not in ('waiting', 'active', 'stopping', 'dead')
begin select raise(abort, 'CHECK constraint failed: node_events.to_status'); end;
create trigger node_events_to_status_check_update before update of to_status on node_events
when new.to_status not in ('waiting', 'active', 'stopping', 'dead')
begin select raise(abort, 'CHECK constraint failed: node_events.to_status'); end;

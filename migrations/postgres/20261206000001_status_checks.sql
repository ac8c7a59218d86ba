-- States are closed sets: each state column takes only the words `aiedge_core::states` knows
-- (the store's tests write each word, and a wrong one, on both engines). This is the
-- PostgreSQL half: CHECK constraints on the existing tables (../sqlite has triggers that refuse
-- the same writes).

alter table jobs add constraint jobs_status_check check (status in ('queued', 'dispatched', 'running', 'succeeded', 'failed', 'cancelled'));
alter table job_events add constraint job_events_status_check check (status in ('queued', 'dispatched', 'running', 'succeeded', 'failed', 'cancelled'));
alter table job_attempts add constraint job_attempts_outcome_check check (outcome in ('dispatched', 'running', 'succeeded', 'failed', 'lost', 'cancelled'));
alter table nodes add constraint nodes_status_check check (status in ('waiting', 'active', 'stopping', 'dead'));
alter table nodes add constraint nodes_admin_state_check check (admin_state in ('enabled', 'disabled', 'draining', 'removed'));
alter table node_events add constraint node_events_from_status_check check (from_status in ('waiting', 'active', 'stopping', 'dead'));
alter table node_events add constraint node_events_to_status_check check (to_status in ('waiting', 'active', 'stopping', 'dead'));

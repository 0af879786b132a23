-- pgpulse capture schema, version 8: row-level security checked for every
-- (role, claims) group of a batch in one call.

-- Row-level security of streamed rows, for every (role, claims) group of a
-- batch in one call (pgpulse/routing/row_security.py).  For each group: set
-- its role and claims (the PostgREST convention), run its statement over the
-- batch's rows (rebuilt once, by the caller), return the rows it may see.  A
-- group whose policies raise gets one row with the error instead, and the
-- others go on (the group's subtransaction is rolled back, and with it its
-- role).  SECURITY INVOKER: it can switch only to roles its caller's session
-- may switch to.
create function pgpulse.row_security_verdicts(
    rows anyarray, roles text[], claims text[], statements text[],
    statement_of integer[], params jsonb[]
) returns table (viewer integer, ord integer, verdicts boolean[], error text)
language plpgsql as $fn$
declare
    saved_role text := current_setting('role');
    saved_claims text := current_setting('request.jwt.claims', true);
    k integer;
begin
    for k in 1 .. coalesce(array_length(roles, 1), 0) loop
        begin
            perform set_config('role', roles[k], true),
                    set_config('request.jwt.claims', claims[k], true);
            return query execute statements[statement_of[k]]
                using rows, params[k], k;
        exception when others then
            return query select k, null::integer, null::boolean[], sqlerrm;
        end;
    end loop;
    perform set_config('role', saved_role, true),
            set_config('request.jwt.claims', coalesce(saved_claims, ''), true);
end
$fn$;

insert into pgpulse.schema_version (version) values (8);

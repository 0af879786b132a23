"""Auth: who is asking (JWTs, an application's hook), what each table allows them
(policies: roles, row filters with claim placeholders, columns), and PostgreSQL's
own row-level security evaluated once per batch per distinct (role, claims)."""

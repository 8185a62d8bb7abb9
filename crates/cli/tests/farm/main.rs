//! The farm end to end as processes: `rbk coordinator`, `rbk worker`s with
//! separate state dirs, builds submitted over gRPC or with `rbk submit`.

mod submit;

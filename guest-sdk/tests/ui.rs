//! Wrong handler signatures fail to compile, with errors that point at the user's
//! code. The expected messages are in tests/ui/*.stderr; after an intended change,
//! regenerate them with `TRYBUILD=overwrite cargo test -p wasmloop-sdk --test ui`.

#[test]
fn wrong_signatures_are_compile_errors_at_the_users_code() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}

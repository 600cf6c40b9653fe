//! `rootbox`: build filesystem images owned by root, without being root.
//! Everything is in the library ([`rootbox::cli::main`]).

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    rootbox::cli::main()
}

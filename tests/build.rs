// build integration tests (in progress)

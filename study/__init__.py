"""What a user declares and launches: study files, their validation, search spaces, the Tuner, the CLI."""

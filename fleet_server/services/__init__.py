"""Operations with side effects that the API and the CLI share (tokens, broker auth, enrolment)."""

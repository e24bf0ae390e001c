"""Database access: the only package that imports psycopg and creates connections."""

from ingest_platform.cli import main

main()

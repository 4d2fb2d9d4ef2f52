from mindsight.cli.main import cli

cli()

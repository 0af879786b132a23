from pgpulse.cli import main

main(prog_name="pgpulse")

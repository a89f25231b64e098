from postfuze_imports.cli import main

main()

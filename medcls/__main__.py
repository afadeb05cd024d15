from medcls.cli import main

main()

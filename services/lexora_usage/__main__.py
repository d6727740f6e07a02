from lexora_usage.app import main

if __name__ == "__main__":
    main()

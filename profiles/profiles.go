package profiles

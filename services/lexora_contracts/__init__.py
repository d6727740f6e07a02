"""Contracts shared by every Lexora service: messages, subjects, money, errors. No I/O here."""

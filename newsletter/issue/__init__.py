"""The morning's issue: feeds read, stories selected, the editor's hand applied, the email rendered."""

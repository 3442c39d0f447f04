// The sync messages live in ConvergeProtocol, which the server imports too (it does not
// depend on this client module); apps that import ConvergeSync see them as before.
@_exported import ConvergeProtocol

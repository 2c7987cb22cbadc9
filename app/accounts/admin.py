"""Django admin registrations for banks, accounts and transfers."""
from django.contrib import admin

from accounts.models import Account, ApiToken, Bank, Transfer


@admin.register(Bank)
class BankAdmin(admin.ModelAdmin):
    list_display = ["name"]
    search_fields = ["name"]


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ["number", "holder", "owner", "bank", "balance"]
    list_filter = ["bank"]
    search_fields = ["number", "holder", "owner__username"]
    list_select_related = ["bank", "owner"]
    raw_id_fields = ["owner"]


@admin.register(Transfer)
class TransferAdmin(admin.ModelAdmin):
    list_display = ["created_at", "from_account", "to_account", "amount"]
    list_select_related = ["from_account", "to_account"]
    date_hierarchy = "created_at"

    # A Transfer row records money that moved via accounts.banking; adding,
    # editing or deleting one here would move no money, so the admin only shows them.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    # Only the digest is stored: staff see which tokens exist and may delete one (revoke), never read or make one.
    list_display = ["user", "name", "created_at"]
    search_fields = ["user__username", "name"]
    list_select_related = ["user"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

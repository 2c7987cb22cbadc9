"""URL routing for the bank site."""
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from accounts import api, views

urlpatterns = [
    path("", views.home, name="home"),
    path("banks/<int:pk>/", views.bank_detail, name="bank_detail"),
    path("balance/", views.balance, name="balance"),
    path("report/", views.report, name="report"),
    path("report/generate/", views.generate_report, name="generate_report"),
    path("report/view/", views.view_report, name="view_report"),
    path("hello/", views.hello, name="hello"),
    path("health/", views.health, name="health"),
    path("transfer/", views.transfer, name="transfer"),
    path("search/", views.search, name="search"),
    path("transfer/<int:pk>/", views.transfer_done, name="transfer_done"),
    path("statements/", views.statements, name="statements"),
    path("statements/<int:pk>/", views.statement, name="statement"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    # The JSON API: its own hosts behind the balancer's /api/ location when the lab has api hosts (docs/api.md).
    path("api/accounts/", api.accounts, name="api_accounts"),
    path("api/transfers/", api.transfers, name="api_transfers"),
    path("api/transfers/<int:pk>/", api.transfer, name="api_transfer"),
]
